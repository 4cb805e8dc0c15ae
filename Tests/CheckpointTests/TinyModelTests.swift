import XCTest
import Checkpoint

final class TinyModelTests: TemporaryDirectoryTestCase {
    func testShapeAndVocabulary() {
        let c = TinyModel.config
        XCTAssertEqual([c.numLayers, c.hiddenSize, c.numHeads, c.numKVHeads, c.headDim, c.intermediateSize], [2, 64, 4, 2, 16, 128])
        XCTAssertTrue(c.tiedEmbeddings)
        let t = TinyModel.tokenizer
        XCTAssertEqual(t.tokens.count, 256 + TinyModel.merges.count + 1)
        XCTAssertEqual(c.vocabSize, t.tokens.count)
        // GPT-2 byte alphabet: printable bytes are themselves, space is U+0120, newline U+010A, 0x00 U+0100.
        XCTAssertEqual(t.tokens[Int(UInt8(ascii: "a"))], "a")
        XCTAssertEqual(t.tokens[0x20], "Ġ")
        XCTAssertEqual(t.tokens[0x0a], "Ċ")
        XCTAssertEqual(t.tokens[0x00], "\u{100}")
        XCTAssertEqual(t.tokens[0xad], "\u{143}")   // the last of the 68 remapped bytes
        XCTAssertEqual(t.tokens[0xff], "ÿ")
        XCTAssertEqual(Set(t.tokens).count, t.tokens.count, "tokens are distinct")
        for merge in t.merges {
            let parts = merge.split(separator: " ").map(String.init)
            XCTAssertEqual(parts.count, 2)
            XCTAssertTrue(t.tokens.contains(parts[0]) && t.tokens.contains(parts[1]), merge)
            XCTAssertTrue(t.tokens.contains(parts[0] + parts[1]), merge)
        }
        XCTAssertEqual(t.tokens[t.eosId!], "<|endoftext|>")
        XCTAssertEqual(t.tokenTypes[t.eosId!], 3)
    }

    func testF32FileReadsBackExactly() throws {
        let p = path("tiny.gguf")
        let model = try TinyModel.writeGGUF(to: p, seed: 7)
        let read = try GGUFFile(path: p).modelWeights()
        XCTAssertEqual(read.config, model.config)
        XCTAssertEqual(read.tokenizer, model.tokenizer)
        XCTAssertEqual(Set(read.tensors.keys), Set(model.tensors.keys))
        for (name, t) in model.tensors {
            XCTAssertEqual(read[name].shape, t.shape, name)
            XCTAssertEqual(read[name].values, t.values, name)
        }
    }

    /// q/k rows are stored the way llama.cpp's converter stores them:
    /// reshape(heads, 2, headDim/2, cols).swapaxes(1, 2), i.e. GGUF row h·hd + 2i + r holds
    /// Hugging Face row h·hd + r·hd/2 + i.
    func testQueryAndKeyRowsAreStoredPermuted() throws {
        let p = path("tiny.gguf")
        let model = try TinyModel.writeGGUF(to: p, seed: 8)
        let g = try GGUFFile(path: p)
        let hd = TinyModel.config.headDim, cols = TinyModel.config.hiddenSize
        for (gguf, hf, heads) in [("blk.1.attn_q.weight", "model.layers.1.self_attn.q_proj.weight", 4),
                                  ("blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight", 2)] {
            let stored = try g.floats(gguf), original = model[hf].values
            for h in 0..<heads {
                for i in 0..<(hd / 2) {
                    for r in 0..<2 {
                        let s = (h * hd + 2 * i + r) * cols, o = (h * hd + r * hd / 2 + i) * cols
                        XCTAssertEqual(Array(stored[s..<(s + cols)]), Array(original[o..<(o + cols)]), "\(gguf) head \(h) pair \(i)")
                    }
                }
            }
            XCTAssertNotEqual(stored, original, "the permutation is not the identity")
        }
        // Other matrices are stored as they are.
        XCTAssertEqual(try g.floats("blk.1.attn_v.weight"), model["model.layers.1.self_attn.v_proj.weight"].values)
    }

    func testSeedsAndGenerators() {
        let a = TinyModel.weights(seed: 1), b = TinyModel.weights(seed: 1), c = TinyModel.weights(seed: 2)
        let name = "model.layers.0.mlp.up_proj.weight"
        XCTAssertEqual(a[name].values, b[name].values)
        XCTAssertNotEqual(a[name].values, c[name].values)
        // Any generator can drive it (e.g. Kernels' SeededRandom in other test targets).
        var lcg = LCGGenerator(seed: 5)
        let d = TinyModel.weights(using: &lcg)
        XCTAssertNoThrow(try d.validate())
        // Scales as documented: linears N(0, 1/fan_in), norms around 1.
        let up = a[name].values
        let variance = up.reduce(0) { $0 + $1 * $1 } / Float(up.count)
        XCTAssertEqual(variance, 1 / 64, accuracy: 0.2 / 64)
        let norm = a["model.layers.0.input_layernorm.weight"].values
        XCTAssertEqual(norm.reduce(0, +) / Float(norm.count), 1, accuracy: 0.05)
    }

    func testQuantizedFiles() throws {
        for type: GGMLType in [.f16, .q8_0, .q4_1] {
            let p = path("tiny-\(type.name).gguf")
            let model = try TinyModel.writeGGUF(to: p, seed: 3, weightType: type)
            let g = try GGUFFile(path: p)
            XCTAssertEqual(g.tensor("blk.0.ffn_down.weight")?.type, type)
            XCTAssertEqual(g.tensor("token_embd.weight")?.type, type)
            XCTAssertEqual(g.tensor("blk.0.attn_norm.weight")?.type, .f32, "vectors stay F32")
            let read = try g.modelWeights()
            let name = "model.layers.0.self_attn.q_proj.weight"
            let maxError = zip(read[name].values, model[name].values).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(maxError, type == .q4_1 ? 0.1 : 0.01, type.name)
            XCTAssertEqual(read["model.norm.weight"].values, model["model.norm.weight"].values)
        }
    }

    /// Readers leave matrices in the map in their stored type; rows read one by one (q/k in
    /// Hugging Face order) equal the whole conversion, a streamed write equals the values, and
    /// setting values keeps them in memory.
    func testMappedTensorsReadAsStored() throws {
        let p = path("mapped.gguf")
        try TinyModel.writeGGUF(to: p, seed: 5, weightType: .q8_0)
        let read = try loadCheckpoint(p)
        var q = read["model.layers.1.self_attn.q_proj.weight"]
        XCTAssertTrue(q.isMapped)
        XCTAssertEqual(q.storedType, .q8_0)
        XCTAssertNil(q.storedBytes, "q rows are permuted on reading, so not readable as stored bytes")
        XCTAssertNotNil(read["model.embed_tokens.weight"].storedBytes)
        let all = q.values
        var row = [Float](repeating: 0, count: q.rowWidth)
        for r in [0, 1, 9, q.rowCount - 1] {
            row.withUnsafeMutableBufferPointer { q.readRows(r..<(r + 1), into: $0.baseAddress!) }
            XCTAssertEqual(row, Array(all[(r * q.rowWidth)..<((r + 1) * q.rowWidth)]), "row \(r)")
        }
        XCTAssertTrue(q.allValuesFinite())
        q.values[3] = .nan
        XCTAssertFalse(q.isMapped)
        XCTAssertFalse(q.allValuesFinite())

        let dir = path("mapped-hf")
        try HuggingFaceCheckpoint.write(read, toDirectory: dir, dtype: .f32)
        let back = try loadCheckpoint(dir)
        for (name, t) in read.tensors { XCTAssertEqual(back[name].values, t.values, name) }
    }

    func testUntiedHeadAndBiases() throws {
        var llama = TinyModel.config
        llama.tiedEmbeddings = false
        llama.attentionBias = true
        var qwen = llama
        qwen.architecture = "qwen2"
        for config in [llama, qwen] {
            let p = path("\(config.architecture).gguf")
            let model = try TinyModel.writeGGUF(to: p, seed: 4, config: config)
            let g = try GGUFFile(path: p)
            XCTAssertNotNil(g.tensor("output.weight"))
            let read = try g.modelWeights()
            XCTAssertEqual(read.config, config)
            for (name, t) in model.tensors { XCTAssertEqual(read[name].values, t.values, name) }
            let storedBias = try g.floats("blk.0.attn_q.bias"), bias = model["model.layers.0.self_attn.q_proj.bias"].values
            if config.architecture == "qwen2" {
                XCTAssertEqual(storedBias, bias, "qwen2 is stored unpermuted")
            } else {
                XCTAssertEqual(storedBias[1], bias[8], "llama bias: stored row 1 is row hd/2 of head 0")
            }
        }
    }
}

/// A generator that is not SplitMix64, to show `weights(using:)` takes any.
struct LCGGenerator: RandomNumberGenerator {
    var lcg: TestLCG
    init(seed: UInt64) { lcg = TestLCG(seed) }
    mutating func next() -> UInt64 { lcg.next() << 32 | lcg.next() }
}
