import Foundation
import XCTest
import Checkpoint

/// `aqlm quantize` killed with SIGKILL mid-run and rerun with the same command finishes with
/// exactly the files an uninterrupted run writes.
final class CLIResumeTests: CLITestCase {
    /// The tiny model's vocabulary with six blocks, so there is a middle to be killed in.
    let config: LlamaConfig = {
        var c = TinyModel.config
        c.numLayers = 6
        return c
    }()

    func quantizeArguments(model: String, calibration: String, out: String) -> [String] {
        ["quantize", "--model", model, "--out", out, "--scheme", "2x4", "--calibration", calibration,
         "--samples", "16", "--seqlen", "32", "--max-iters", "3", "--seed", "7", "--threads", "1"]
    }

    func finishedBlocks(_ out: String) -> Int? {
        guard let data = FileManager.default.contents(atPath: out + ".work/progress.json"),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return object["finished_blocks"] as? Int
    }

    /// With the default full-precision-chain targets the work directory also carries the
    /// full-precision activations; a resume that lost or misread them would train later blocks
    /// toward other targets and write other codebooks.
    func testKillNineThenResumeGivesTheUninterruptedFiles() throws {
        try killThenResume(extraArguments: [])
    }

    func testKillNineThenResumeWithBlockLocalTargets() throws {
        try killThenResume(extraArguments: ["--finetune-targets", "local"])
    }

    /// Activations in files of the work directory (unlinked at once, so a killed run leaves none).
    func testKillNineThenResumeWithActivationsInFiles() throws {
        try killThenResume(extraArguments: ["--activation-memory", "0"])
    }

    /// The thread count follows the machine's load, so it must not reach the files: one block
    /// of a model wide enough that the forward, XᵀX, the quantizer's W·H and fine-tuning are
    /// cut into several BLAS panels (widths 256/1024, 64-token sequences), at 1 and 2 threads.
    func testOneAndTwoThreadsWriteTheSameFiles() throws {
        var wide = TinyModel.config
        wide.hiddenSize = 256
        wide.intermediateSize = 1024
        let model = try tinyGGUF("wide.gguf", seed: 5, config: wide)
        let calibration = try writeText("calibration.txt", words: 3000)
        var outputs: [String] = []
        for threads in ["1", "2"] {
            let out = path("threads-\(threads)")
            try succeed(["quantize", "--model", model, "--out", out, "--scheme", "2x4", "--calibration", calibration,
                         "--samples", "16", "--seqlen", "64", "--max-iters", "2", "--seed", "7", "--blocks", "1",
                         "--threads", threads], timeout: 120)
            outputs.append(out)
        }
        for file in ["model.safetensors", "config.json"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: outputs[0] + "/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: outputs[1] + "/" + file))
            XCTAssertGreaterThan(a.count, 0)
            XCTAssertTrue(a == b, "\(file) differs between --threads 1 and --threads 2")
        }
    }

    func killThenResume(extraArguments: [String]) throws {
        let model = try tinyGGUF("six-blocks.gguf", seed: 3, config: config)
        let calibration = try writeText("calibration.txt", words: 2000)

        let reference = path("uninterrupted")
        try succeed(quantizeArguments(model: model, calibration: calibration, out: reference) + extraArguments, timeout: 60)

        // Kill as soon as one block is on disk (polling faster than a block takes).
        let out = path("interrupted")
        let arguments = quantizeArguments(model: model, calibration: calibration, out: out) + extraArguments
        let first = try CLIProcess(arguments, scratch: directory)
        let deadline = Date().addingTimeInterval(60)
        var finished = 0
        while first.process.isRunning && Date() < deadline {
            finished = finishedBlocks(out) ?? 0
            if finished >= 1 { break }
            usleep(1_000)
        }
        kill(first.pid, SIGKILL)
        let (killed, _) = first.wait(timeout: 10)
        XCTAssertFalse(killed.exited, "the first run must be killed mid-way, not finish:\n\(killed.stderr)")
        XCTAssertGreaterThanOrEqual(finished, 1)
        let atKill = try XCTUnwrap(finishedBlocks(out), "progress.json survives the kill")
        XCTAssertLessThan(atKill, config.numLayers, "killed before the last block")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "no output directory from a killed run")

        let resumed = try run(arguments, timeout: 60)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resuming after block \(atKill - 1)"), resumed.stderr)
        XCTAssertFalse(resumed.stderr.contains("block  0 done"), "finished blocks are not redone:\n\(resumed.stderr)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".work"), "work directory removed when done")

        for file in ["model.safetensors", "config.json"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: reference + "/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: out + "/" + file))
            XCTAssertGreaterThan(a.count, 0)
            XCTAssertTrue(a == b, "\(file) differs between the uninterrupted and the killed-and-resumed run")
        }
    }
}
