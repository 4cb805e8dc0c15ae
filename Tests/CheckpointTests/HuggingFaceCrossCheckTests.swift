import XCTest
import Foundation
import Checkpoint

/// Cross-checks against third-party code: tools/gguf_to_hf.py writes the default GGUF as a Hugging
/// Face directory with gguf-py's dequantizer, numpy's un-permutation, the `safetensors` writer and
/// the `tokenizers` library; our loader must read back exactly what our GGUF reader produces. The
/// HF `tokenizers` library must tokenize with our written tokenizer.json exactly as llama.cpp did,
/// and the `safetensors` library must read our files and write byte-identical ones.
final class HuggingFaceCrossCheckTests: TemporaryDirectoryTestCase {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static func root(_ relative: String) -> String { (packageRoot as NSString).appendingPathComponent(relative) }

    static var cacheBase: String {
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (NSHomeDirectory() as NSString).appendingPathComponent(".cache")
        return (base as NSString).appendingPathComponent("aqlm")
    }

    /// Runs a command; a non-zero exit fails the test with its stderr (setup problems must not skip).
    func run(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let out = Pipe()
        let errPath = path("stderr-\(UUID().uuidString).txt")
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process.standardOutput = out
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            XCTFail("\(arguments.joined(separator: " ")) exited \(process.terminationStatus):\n\(stderr.suffix(3000))", file: file, line: line)
            throw CheckpointError.invalid(arguments.first ?? "", detail: "command failed")
        }
        return String(decoding: outData, as: UTF8.self)
    }

    /// The venv's python (created by tools/pyenv.sh on first use).
    func python() throws -> String {
        let out = try run(["bash", Self.root("tools/pyenv.sh")])
        guard let py = out.split(separator: "\n").last.map(String.init), FileManager.default.isExecutableFile(atPath: py) else {
            XCTFail("tools/pyenv.sh printed no python path: \(out)")
            throw CheckpointError.invalid("tools/pyenv.sh", detail: "no python path")
        }
        return py
    }

    /// FNV-1a over the converter, the environment script and the model's size: a changed script or
    /// model makes a new cache entry.
    static func cacheKey(model: String) throws -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for file in ["tools/gguf_to_hf.py", "tools/pyenv.sh"] {
            for b in try Data(contentsOf: URL(fileURLWithPath: root(file))) { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        }
        let size = (try FileManager.default.attributesOfItem(atPath: model)[.size] as? NSNumber)?.uint64Value ?? 0
        return String(h ^ size, radix: 16)
    }

    /// The default model converted by tools/gguf_to_hf.py, cached across runs; entries made by
    /// older versions of the scripts (half a gigabyte each) are removed.
    func convertedDefaultModel(python py: String) throws -> String {
        let model = ModelPaths.defaultModel
        let cache = (Self.cacheBase as NSString).appendingPathComponent("hf")
        let name = "smollm2-135m-\(try Self.cacheKey(model: model))"
        let dir = (cache as NSString).appendingPathComponent(name)
        if !FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("model.safetensors")) {
            _ = try run([py, Self.root("tools/gguf_to_hf.py"), model, dir])
            for old in (try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []
            where old.hasPrefix("smollm2-135m-") && old != name {
                try? FileManager.default.removeItem(atPath: (cache as NSString).appendingPathComponent(old))
            }
        }
        return dir
    }

    func testConvertedDefaultModelMatchesGGUFExactly() throws {
        let model = ModelPaths.defaultModel
        try XCTSkipUnless(FileManager.default.fileExists(atPath: model), "run tools/setup.sh first")
        let dir = try convertedDefaultModel(python: try python())

        let hf = try loadCheckpoint(dir)
        let gguf = try loadCheckpoint(model)
        XCTAssertEqual(hf.config, gguf.config)
        XCTAssertEqual(hf.tokenizer.tokens, gguf.tokenizer.tokens)
        XCTAssertEqual(hf.tokenizer.merges, gguf.tokenizer.merges)
        XCTAssertEqual(hf.tokenizer.preTokenizer, "smollm")
        XCTAssertEqual(hf.tokenizer, gguf.tokenizer)
        XCTAssertEqual(hf.tensors.count, gguf.tensors.count)
        for (name, expected) in gguf.tensors {
            guard let got = hf.tensors[name] else { XCTFail("converted model lacks \(name)"); continue }
            XCTAssertEqual(got.shape, expected.shape, name)
            var maxDiff: Float = 0
            for (a, b) in zip(got.values, expected.values) { maxDiff = max(maxDiff, abs(a - b)) }
            XCTAssertEqual(maxDiff, 0, "\(name): max abs diff \(maxDiff)")
        }
        // The q/k un-permutation must have changed rows: equality above is not trivially true.
        let rawQ = try GGUFFile(path: model).floats("blk.0.attn_q.weight")
        XCTAssertNotEqual(rawQ, hf["model.layers.0.self_attn.q_proj.weight"].values)
    }

    /// Our tokenizer.json (from the GGUF's spec) and the converter's, run through the HF `tokenizers`
    /// library on wiki.test.raw, give llama.cpp's reference ids.
    func testTokenizersLibraryMatchesLlamaCppWithOurTokenizerJSON() throws {
        let model = ModelPaths.defaultModel
        let text = Self.root("../shared/data/wikitext-2/wiki.test.raw")
        let ids = Self.root("../shared/data/reference/wiki.test.raw.smollm2.ids")
        try XCTSkipUnless(FileManager.default.fileExists(atPath: model), "run tools/setup.sh first")
        try XCTSkipUnless(FileManager.default.fileExists(atPath: text) && FileManager.default.fileExists(atPath: ids), "reference data absent")
        let py = try python()
        let converted = try convertedDefaultModel(python: py)
        let ours = try newDirectory()
        try HuggingFaceTokenizer.write(try GGUFFile(path: model).tokenizerSpec(), toDirectory: ours)

        let script = """
        import sys
        from tokenizers import Tokenizer
        text = open(sys.argv[1], encoding="utf-8", newline="").read()
        ref = [int(x) for x in open(sys.argv[2]).read().split()]
        for path in sys.argv[3:]:
            got = Tokenizer.from_file(path).encode(text, add_special_tokens=False).ids
            first = next((i for i, (a, b) in enumerate(zip(got, ref)) if a != b), min(len(got), len(ref)))
            print(path, len(got), len(ref), first if got != ref else -1)
        """
        let out = try run([py, "-c", script, text, ids, (ours as NSString).appendingPathComponent("tokenizer.json"),
                           (converted as NSString).appendingPathComponent("tokenizer.json")])
        let lines = out.split(separator: "\n").map { $0.split(separator: " ") }
        XCTAssertEqual(lines.count, 2, out)
        for l in lines {
            XCTAssertEqual(l.count, 4, out)
            XCTAssertEqual(l.dropFirst().map(String.init), ["304830", "304830", "-1"], "\(l[0]): count, reference count, first mismatch")
        }
    }

    /// The `safetensors` library reads what we write, and re-saving it reproduces our bytes.
    func testSafeTensorsLibraryAgreesWithOurWriter() throws {
        let ours = path("ours.safetensors")
        let theirs = path("theirs.safetensors")
        // One metadata key: the reference writes metadata in its hash map's (per-process random) order.
        var w = SafeTensorsWriter(metadata: ["format": "pt"])
        try w.add("codes", shape: [3, 5], integers: (0..<15).map { Int16($0 * 911 - 7000) })
        try w.add("codebooks", shape: [2, 4], floats: (0..<8).map { Float($0) * 0.37 - 1 }, as: .f16)
        try w.add("scales", shape: [3], floats: [0.5, -1.25, 3], as: .bf16)
        try w.add("dense", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        try w.add("bytes", shape: [5], integers: [Int8(-1), 2, -3, 4, -5])
        try w.add("index", shape: [2], integers: [Int32(70000), -1])
        try w.write(to: ours)
        let py = try python()
        // numpy has no bfloat16, so the library's raw deserialize/serialize (dtype names + bytes) is used.
        let script = """
        import sys
        import numpy as np
        from safetensors import TensorSpec, deserialize, safe_open, serialize
        NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I8": "int8", "I16": "int16", "I32": "int32"}
        with safe_open(sys.argv[1], framework="np") as f:
            meta = f.metadata()
        items = deserialize(open(sys.argv[1], "rb").read())
        data = {name: np.frombuffer(bytes(t["data"]), dtype=np.uint8) for name, t in items}
        dtypes = {name: t["dtype"] for name, t in items}
        codes = data["codes"].view(np.int16).reshape([t["shape"] for n, t in items if n == "codes"][0])
        print(sorted(dtypes.items()), codes[2, 4], data["index"].view(np.int32).tolist())
        specs = {name: TensorSpec(dtype=NAMES[t["dtype"]], shape=t["shape"], data_ptr=data[name].ctypes.data,
                                  data_len=data[name].nbytes) for name, t in items}
        open(sys.argv[2], "wb").write(serialize(specs, meta))
        """
        let out = try run([py, "-c", script, ours, theirs])
        XCTAssertEqual(out, "[('bytes', 'I8'), ('codebooks', 'F16'), ('codes', 'I16'), ('dense', 'F32'), ('index', 'I32'), ('scales', 'BF16')] 5754 [70000, -1]\n")
        let (a, b) = (try Data(contentsOf: URL(fileURLWithPath: ours)), try Data(contentsOf: URL(fileURLWithPath: theirs)))
        XCTAssertEqual(String(decoding: a.prefix(400), as: UTF8.self), String(decoding: b.prefix(400), as: UTF8.self))
        XCTAssertEqual(a, b)
    }
}
