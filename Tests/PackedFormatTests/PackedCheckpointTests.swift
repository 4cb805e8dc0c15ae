import XCTest
import Foundation
import Checkpoint
import Kernels
import Llama
import PackedFormat
import Quantizer

final class PackedCheckpointTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "packed-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The tiny model with every block linear AQLM-coded (H = I, a quick setting: the test is
    /// about the file, not the quality).
    static func packedTinyModel(scheme: AQLMScheme) throws -> PackedModel {
        if let cached = cache[scheme] { return cached }
        let weights = TinyModel.weights(seed: 7)
        var options = AQLMOptions()
        options.beamSize = 1
        options.maxIterations = 1
        options.kmeansIterations = 2
        var linears: [String: AdditiveCode] = [:]
        var dense = weights.tensors
        for l in 0..<weights.config.numLayers {
            for name in LlamaConfig.linearNames(layer: l) {
                let w = weights[name + ".weight"]
                let (dOut, dIn) = (w.shape[0], w.shape[1])
                var identity = [Double](repeating: 0, count: dIn * dIn)
                for i in 0..<dIn { identity[i * dIn + i] = 1 }
                let q = try quantizeLinear(weight: w.values, dOut: dOut, dIn: dIn, hessian: identity, scheme: scheme, options: options)
                linears[name] = q.additiveCode!.roundedToFloat16()
                dense[name + ".weight"] = nil
            }
        }
        let packed = PackedModel(config: weights.config, tokenizer: weights.tokenizer, scheme: scheme,
                                 linears: linears, dense: dense.mapValues { $0.roundedForPacking() })
        cache[scheme] = packed
        return packed
    }
    nonisolated(unsafe) static var cache: [AQLMScheme: PackedModel] = [:]

    func testRoundTripGivesIdenticalWeights() throws {
        for scheme in [AQLMScheme.preset1x8, AQLMScheme(codebookCount: 2, codeBits: 4, groupSize: 4),
                       AQLMScheme(codebookCount: 1, codeBits: 10, groupSize: 8)] {
            let model = try Self.packedTinyModel(scheme: scheme)
            let path = directory + "/\(scheme.codebookCount)x\(scheme.codeBits)"
            try PackedCheckpoint.write(model, to: path)
            XCTAssertTrue(PackedCheckpoint.isPacked(directory: path))
            let back = try PackedCheckpoint.read(directory: path)
            XCTAssertEqual(back.scheme, scheme)
            XCTAssertEqual(back.config, model.config)
            XCTAssertEqual(Set(back.linears.keys), Set(model.linears.keys))
            for (name, code) in model.linears {
                XCTAssertEqual(back.linears[name], code, "\(name) (\(scheme))")
            }
            for (name, t) in model.dense {
                XCTAssertEqual(back.dense[name]?.values, t.values, name)
            }
            let a = try model.dequantizedWeights(source: "memory"), b = try back.dequantizedWeights(source: path)
            for (name, t) in a.tensors { XCTAssertEqual(b.tensors[name]?.values, t.values, name) }
            // Codes are stored as the reference's signed reinterpretation: int8 for B ≤ 8, int16 above.
            let st = try SafeTensorsCheckpoint(directory: path)
            let info = try XCTUnwrap(st.info("model.layers.0.self_attn.q_proj.codes"))
            XCTAssertEqual(info.dtype, scheme.codeBits <= 8 ? .i8 : .i16)
            XCTAssertEqual(info.shape, [64, 64 / scheme.groupSize, scheme.codebookCount])
            XCTAssertEqual(st.info("model.layers.0.self_attn.q_proj.codebooks")?.shape,
                           [scheme.codebookCount, scheme.codebookSize, 1, scheme.groupSize])
            XCTAssertEqual(st.info("model.layers.0.self_attn.q_proj.scales")?.shape, [64, 1, 1, 1])
        }
    }

    /// Linears read only while the file is written (as `aqlm quantize` writes from its work
    /// directory) give the same files, byte for byte, as the same codes held in memory; each
    /// array is asked for once, and only by the write.
    func testDeferredLinearsWriteTheSameFiles() throws {
        for scheme in [AQLMScheme.preset1x8, AQLMScheme(codebookCount: 1, codeBits: 10, groupSize: 8)] {
            let model = try Self.packedTinyModel(scheme: scheme)
            let eager = directory + "/eager-\(scheme.codeBits)", streamed = directory + "/streamed-\(scheme.codeBits)"
            try PackedCheckpoint.write(model, to: eager)
            var inMemory = model
            var deferred: [String: DeferredLinear] = [:]
            nonisolated(unsafe) var reads: [String: Int] = [:]
            for name in model.linears.keys.sorted().enumerated().filter({ $0.offset % 3 != 0 }).map(\.element) {
                let code = inMemory.linears.removeValue(forKey: name)!
                deferred[name] = DeferredLinear(
                    dOut: code.dOut, dIn: code.dIn,
                    codes: { reads[name + ".codes", default: 0] += 1; return code.codes },
                    codebooks: { reads[name + ".codebooks", default: 0] += 1; return code.codebooks },
                    scales: { reads[name + ".scales", default: 0] += 1; return code.scales })
            }
            XCTAssertFalse(inMemory.linears.isEmpty)
            XCTAssertTrue(reads.isEmpty)
            try PackedCheckpoint.write(inMemory, deferredLinears: deferred, to: streamed) { _ in [:] }
            XCTAssertEqual(reads.count, 3 * deferred.count)
            XCTAssertEqual(Set(reads.values), [1])
            let files = try FileManager.default.contentsOfDirectory(atPath: eager).sorted()
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: streamed).sorted(), files)
            for file in files {
                XCTAssertEqual(FileManager.default.contents(atPath: eager + "/" + file),
                               FileManager.default.contents(atPath: streamed + "/" + file), "\(file) (\(scheme))")
            }
        }
    }

    func testDeferredLinearOfTheWrongSizeIsNamedAndLeavesNoOutput() throws {
        var model = try Self.packedTinyModel(scheme: .preset1x8)
        let name = "model.layers.0.mlp.up_proj"
        let code = model.linears.removeValue(forKey: name)!
        let short = DeferredLinear(dOut: code.dOut, dIn: code.dIn, codes: { Array(code.codes.dropLast()) },
                                   codebooks: { code.codebooks }, scales: { code.scales })
        let path = directory + "/short"
        XCTAssertThrowsError(try PackedCheckpoint.write(model, deferredLinears: [name: short], to: path) { _ in [:] }) {
            XCTAssertTrue("\($0)".contains(name + ".codes"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }

    func testConfigCarriesTheReferenceQuantizationConfig() throws {
        let model = try Self.packedTinyModel(scheme: .preset1x8)
        let path = directory + "/m"
        try PackedCheckpoint.write(model, to: path)
        let json = try readJSONFile(path + "/config.json")
        let q = try XCTUnwrap(json["quantization_config"])
        XCTAssertEqual(q["quant_method"]?.string, "aqlm")
        XCTAssertEqual(q["nbits_per_codebook"]?.int, 8)
        XCTAssertEqual(q["num_codebooks"]?.int, 1)
        XCTAssertEqual(q["in_group_size"]?.int, 8)
        XCTAssertEqual(q["out_group_size"]?.int, 1)
        let kept = q["linear_weights_not_to_quantize"]?.array?.compactMap(\.string) ?? []
        XCTAssertTrue(kept.contains("model.embed_tokens.weight"))
        XCTAssertFalse(kept.contains { $0.hasSuffix("q_proj.weight") })
    }

    func testPackedKernelsMatchDequantizedDenseModel() throws {
        let packed = try Self.packedTinyModel(scheme: .preset1x8)
        let fast = try packed.llamaModel()
        let reference = try LlamaModel(weights: packed.dequantizedWeights(source: "memory"))
        let tokens = Array(0..<40).map { ($0 * 37) % packed.config.vocabSize }
        for count in [1, 3, 40] {
            let s1 = fast.makeState(maxPositions: 64), s2 = reference.makeState(maxPositions: 64)
            let slice = Array(tokens.prefix(count))
            fast.forward(slice, state: s1, logits: .last)
            reference.forward(slice, state: s2, logits: .last)
            let a = Array(s1.logits(row: 0)), b = Array(s2.logits(row: 0))
            let scale = b.map(abs).max()!
            let diff = zip(a, b).map { abs($0 - $1) }.max()!
            // Up to 4 tokens go through the lookup-table kernel, whose int16 tables round each
            // entry (AQLMLinear.decodeErrorBound); 40 tokens go through dequantize + sgemm.
            XCTAssertLessThan(diff, (count <= 4 ? 1e-3 : 1e-4) * max(scale, 1), "\(count) tokens")
        }
    }

    func testStreamedDequantizedModelIsTheFloat32ReferenceBitForBit() throws {
        let packed = try Self.packedTinyModel(scheme: .preset1x8)
        let float32 = try packed.dequantizedLlamaModel(denseLinears: .float32, source: "memory")
        let streamed = try packed.dequantizedLlamaModel(denseLinears: .streamed, source: "memory")
        XCTAssertEqual(float32.denseLinears.storage, .float32)
        XCTAssertEqual(streamed.denseLinears.storage, .streamed)
        let tokens = Array(0..<24).map { ($0 * 37) % packed.config.vocabSize }
        let s1 = float32.makeState(maxPositions: 32), s2 = streamed.makeState(maxPositions: 32)
        float32.forward(tokens, state: s1, logits: .last)
        streamed.forward(tokens, state: s2, logits: .last)
        XCTAssertEqual(Array(s1.logits(row: 0)), Array(s2.logits(row: 0)))
        float32.forward([3], state: s1, logits: .last)
        streamed.forward([3], state: s2, logits: .last)
        XCTAssertEqual(Array(s1.logits(row: 0)), Array(s2.logits(row: 0)))
    }

    func testExistingOutputIsRefused() throws {
        let model = try Self.packedTinyModel(scheme: .preset1x8)
        let path = directory + "/exists"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        XCTAssertThrowsError(try PackedCheckpoint.write(model, to: path)) { error in
            XCTAssertTrue("\(error)".contains(path), "\(error)")
            XCTAssertTrue("\(error)".contains("already exists"), "\(error)")
        }
    }

    func testMissingCodesAreNamed() throws {
        let model = try Self.packedTinyModel(scheme: .preset1x8)
        var broken = model
        broken.linears["model.layers.1.mlp.up_proj"] = nil
        let path = directory + "/broken"
        try PackedCheckpoint.write(broken, to: path)
        XCTAssertThrowsError(try PackedCheckpoint.read(directory: path)) { error in
            XCTAssertTrue("\(error)".contains("model.layers.1.mlp.up_proj.codes"), "\(error)")
        }
    }
    /// Layouts the kernels do not run (the aqlm package can write them) are refused before any
    /// tensor is read, by every reader path, with one line naming the field and its value.
    func testUnsupportedLayoutsNameTheField() throws {
        let model = try Self.packedTinyModel(scheme: .preset1x8)
        let original = directory + "/original"
        try PackedCheckpoint.write(model, to: original)
        let config = try readJSONFile(original + "/config.json")
        for (key, value) in [("out_group_size", 2), ("nbits_per_codebook", 20), ("num_codebooks", 9), ("in_group_size", 7)] {
            let path = directory + "/\(key)"
            try FileManager.default.copyItem(atPath: original, toPath: path)
            let q = try XCTUnwrap(config["quantization_config"]).setting(key, .int(value))
            try writeJSONFile(config.setting("quantization_config", q), to: path + "/config.json")
            let expected = "quantization_config.\(key) \(value) is not supported"
            XCTAssertThrowsError(try PackedCheckpoint.read(directory: path)) { error in
                XCTAssertTrue("\(error)".contains(expected) && "\(error)".contains(path), "\(error)")
                XCTAssertFalse("\(error)".contains("\n"), "one line: \(error)")
            }
            XCTAssertThrowsError(try openModel(path)) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(error)")
            }
        }
    }

    /// The head is declared unquantized in both spellings transformers uses (4.x parameter
    /// names, 5.x module names) even when tied, and so is every block linear left dense.
    func testEveryDenseLinearIsDeclaredForBothTransformersGenerations() throws {
        var model = try Self.packedTinyModel(scheme: .preset1x8)
        let dense = "model.layers.1.mlp.up_proj"
        let code = try XCTUnwrap(model.linears.removeValue(forKey: dense))
        model.dense[dense + ".weight"] = WeightTensor(shape: [code.dOut, code.dIn], values: code.dequantized())
        model.tokenizer.chatTemplate = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        let path = directory + "/partly"
        try PackedCheckpoint.write(model, to: path)
        let json = try readJSONFile(path + "/config.json")
        let kept = Set(json["quantization_config"]?["linear_weights_not_to_quantize"]?.array?.compactMap(\.string) ?? [])
        for name in ["lm_head.weight", "lm_head", dense + ".weight", dense, "model.embed_tokens.weight"] {
            XCTAssertTrue(kept.contains(name), "\(name) not in \(kept.sorted())")
        }
        XCTAssertFalse(kept.contains { $0.hasPrefix("model.layers.0.self_attn.q_proj") }, "\(kept.sorted())")
        XCTAssertEqual(json["torch_dtype"]?.string, "float16")
        XCTAssertEqual(json["dtype"]?.string, "float16")
        XCTAssertEqual(json["transformers_version"]?.string, HuggingFaceConfig.transformersVersion, "4.57.x's Mistral-regex check")
        let back = try PackedCheckpoint.read(directory: path)
        XCTAssertEqual(back.dense[dense + ".weight"]?.shape, [code.dOut, code.dIn])
        XCTAssertEqual(back.tokenizer.chatTemplate, model.tokenizer.chatTemplate, "the chat template is kept")
    }
}
