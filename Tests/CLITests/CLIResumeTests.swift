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

    /// A run killed after writing the next block's hidden states but before progress.json moved
    /// on (once: the states were one block ahead on resume) leaves files a resume must ignore, as
    /// it must the temporary file of a write cut short; it also removes them.
    func testHiddenStatesAheadOfProgressAndHalfWrittenFilesAreIgnored() throws {
        try killThenResume(extraArguments: []) { work, finished in
            let ahead = work + "/hidden-after-\(finished + 1).f32"
            let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: work + "/hidden-after-\(finished).f32")[.size] as? Int)
            XCTAssertTrue(FileManager.default.createFile(atPath: ahead, contents: Data(repeating: 0x41, count: size)))
            XCTAssertTrue(FileManager.default.createFile(atPath: work + "/.hidden-fp-after-\(finished + 1).f32.tmp-1-2", contents: Data(count: 64)))
            return { stderr in
                XCTAssertFalse(FileManager.default.fileExists(atPath: ahead))
                XCTAssertTrue(stderr.contains("that an interrupted run left"), stderr)
            }
        }
    }

    /// Without saved hidden states (a work directory of an older version, or files removed) a
    /// resume recomputes them through the finished blocks: the same codes follow, up to the float
    /// rounding of running the saved rather than the in-memory blocks.
    func testLostHiddenStatesAreRecomputedThroughTheFinishedBlocks() throws {
        try killThenResume(extraArguments: [], identical: false) { work, finished in
            for name in try FileManager.default.contentsOfDirectory(atPath: work) where name.hasPrefix("hidden") {
                try FileManager.default.removeItem(atPath: work + "/" + name)
            }
            return { stderr in XCTAssertTrue(stderr.contains("recomputing them through the finished blocks"), stderr) }
        }
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

    /// - Parameters:
    ///   - identical: whether the resumed run must write byte-identical files (else the codes
    ///     must agree for at least 95 % of the groups).
    ///   - tamper: changes the killed run's work directory (path, finished blocks) before the
    ///     resume and returns checks on the resumed run's stderr.
    func killThenResume(extraArguments: [String], identical: Bool = true,
                        tamper: ((String, Int) throws -> (String) -> Void)? = nil) throws {
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

        let checks = try tamper?(out + ".work", atKill)
        let resumed = try run(arguments, timeout: 60)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        checks?(resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resuming after block \(atKill - 1)"), resumed.stderr)
        XCTAssertFalse(resumed.stderr.contains("block  0 done"), "finished blocks are not redone:\n\(resumed.stderr)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".work"), "work directory removed when done")

        guard identical else {
            let a = try SafeTensorsFile(path: reference + "/model.safetensors"), b = try SafeTensorsFile(path: out + "/model.safetensors")
            var same = 0, total = 0
            for name in a.tensors.map(\.name) where name.hasSuffix(".codes") {
                let x = try a.integers(name, as: Int8.self), y = try b.integers(name, as: Int8.self)   // 2x4: I8 codes
                XCTAssertEqual(x.count, y.count, name)
                same += zip(x, y).filter { $0 == $1 }.count
                total += x.count
            }
            XCTAssertGreaterThan(total, 0)
            XCTAssertGreaterThanOrEqual(Double(same) / Double(max(total, 1)), 0.95, "\(same) of \(total) codes as uninterrupted")
            return
        }
        for file in ["model.safetensors", "config.json"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: reference + "/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: out + "/" + file))
            XCTAssertGreaterThan(a.count, 0)
            XCTAssertTrue(a == b, "\(file) differs between the uninterrupted and the killed-and-resumed run")
        }
    }
}
