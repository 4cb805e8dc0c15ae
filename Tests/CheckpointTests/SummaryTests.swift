import XCTest
import Foundation
import Checkpoint

final class SummaryTests: TemporaryDirectoryTestCase {
    /// Parameter counts from the architecture alone: embedding vocab·hidden; per layer q and o
    /// hidden·(heads·hd), k and v hidden·(kv·hd), gate/up/down hidden·ffn; norms (2·layers + 1)·hidden.
    private func expectedCounts(_ c: LlamaConfig) -> (embedding: Int, linears: Int, norms: Int) {
        let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim
        let perLayer = 2 * c.hiddenSize * q + 2 * c.hiddenSize * kv + 3 * c.hiddenSize * c.intermediateSize
        return (c.vocabSize * c.hiddenSize, c.numLayers * perLayer, (2 * c.numLayers + 1) * c.hiddenSize)
    }

    func testTinyModelCountsAndBits() throws {
        let c = TinyModel.config
        let (embedding, linears, norms) = expectedCounts(c)
        for (type, bitsPerWeight) in [(GGMLType.f32, 32.0), (.f16, 16), (.q8_0, 8.5), (.q4_1, 5), (.q4_0, 4.5)] {
            let p = path("tiny-\(type.name).gguf")
            try TinyModel.writeGGUF(to: p, seed: 1, weightType: type)
            let s = try GGUFFile(path: p).summary()
            XCTAssertEqual(s.architecture, "llama")
            XCTAssertEqual(s.config, c)
            XCTAssertEqual(s.format, "GGUF v3")
            XCTAssertEqual(s.parameters.embeddings, embedding)
            XCTAssertEqual(s.parameters.blockLinears, linears)
            XCTAssertEqual(s.parameters.norms, norms)
            XCTAssertEqual(s.parameters.outputHead, 0, "tied")
            XCTAssertEqual(s.parameters.total, embedding + linears + norms)
            XCTAssertEqual(s.tensors.count, 2 + 9 * c.numLayers)   // embedding, final norm; tied: no output.weight
            XCTAssertEqual(s.blockLinearBitsPerWeight, bitsPerWeight, type.name)
            // Matrices (embedding included) are `type`, norms F32.
            let expectedBits = (Double(embedding + linears) * bitsPerWeight + Double(norms) * 32) / Double(embedding + linears + norms)
            XCTAssertEqual(s.bitsPerWeight, expectedBits, accuracy: 1e-9, type.name)
            XCTAssertEqual(s.totalBytes, s.tensors.reduce(0) { $0 + $1.bytes })
        }
    }

    func testRowsDescribeEachTensor() throws {
        let p = path("tiny.gguf")
        try TinyModel.writeGGUF(to: p, seed: 1, weightType: .q8_0)
        let s = try GGUFFile(path: p).summary()
        let down = try XCTUnwrap(s.tensors.first { $0.name == "blk.1.ffn_down.weight" })
        XCTAssertEqual(down.shape, [64, 128])
        XCTAssertEqual(down.type, "Q8_0")
        XCTAssertEqual(down.bytes, 64 * 128 / 32 * 34)
        XCTAssertEqual(down.parameters, 64 * 128)
        XCTAssertEqual(down.role, .blockLinear)
        XCTAssertEqual(s.tensors.first { $0.name == "token_embd.weight" }?.role, .embedding)
        XCTAssertEqual(s.tensors.first { $0.name == "output_norm.weight" }?.role, .norm)
        XCTAssertEqual(s.metadata.first?.key, "general.architecture")
        XCTAssertEqual(s.metadata.first { $0.key == "tokenizer.ggml.tokens" }?.value, "[\(TinyModel.tokenizer.tokens.count) items]")
        XCTAssertEqual(s.metadata.first { $0.key == "llama.block_count" }?.type, "u32")

        let text = s.text()
        for t in s.tensors { XCTAssertTrue(text.contains(t.name), t.name) }
        XCTAssertTrue(text.contains("general.architecture"))
        XCTAssertTrue(text.contains("8.5000 over block linears"), text)
        XCTAssertFalse(text.contains("\t"))
    }

    func testJSONHasSnakeCaseKeys() throws {
        let p = path("tiny.gguf")
        try TinyModel.writeGGUF(to: p, seed: 1, weightType: .q4_1)
        let json = try GGUFFile(path: p).summary().json()
        XCTAssertFalse(json.contains("\n"), "one line")
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(object["architecture"] as? String, "llama")
        XCTAssertEqual(object["block_linear_bits_per_weight"] as? Double, 5)
        XCTAssertNotNil(object["bits_per_weight"] as? Double)
        let parameters = try XCTUnwrap(object["parameters"] as? [String: Int])
        XCTAssertEqual(parameters["total"], try GGUFFile(path: p).tensors.reduce(0) { $0 + $1.elementCount })
        XCTAssertNotNil(parameters["block_linears"])
        let tensors = try XCTUnwrap(object["tensors"] as? [[String: Any]])
        XCTAssertEqual(tensors.count, 2 + 9 * TinyModel.config.numLayers)
        let first = tensors[0]
        XCTAssertEqual(first["name"] as? String, "token_embd.weight")
        XCTAssertEqual(first["shape"] as? [Int], [TinyModel.tokenizer.tokens.count, 64])
        XCTAssertEqual(first["type"] as? String, "Q4_1")
        XCTAssertNotNil(first["bytes"] as? Int)
        let config = try XCTUnwrap(object["config"] as? [String: Any])
        XCTAssertEqual(config["num_kv_heads"] as? Int, 2)
        XCTAssertEqual(config["tied_embeddings"] as? Bool, true)
    }

    func testUntiedHeadAndOtherArchitectures() throws {
        var c = TinyModel.config
        c.tiedEmbeddings = false
        let p = path("untied.gguf")
        try TinyModel.writeGGUF(to: p, seed: 1, config: c)
        let s = try GGUFFile(path: p).summary()
        XCTAssertEqual(s.parameters.outputHead, c.vocabSize * c.hiddenSize)
        XCTAssertEqual(s.tensors.first { $0.name == "output.weight" }?.role, .outputHead)

        // A GGUF this project cannot run still gets a summary, without config.
        var w = GGUFWriter()
        w.setMetadata("general.architecture", .string("gpt2"))
        try w.addTensor("token_embd.weight", shape: [4, 2], type: .f32, values: [Float](repeating: 0, count: 8))
        try w.addTensor("blk.0.attn_qkv.weight", shape: [6, 2], type: .f16, values: [Float](repeating: 0, count: 12))
        let q = path("gpt2.gguf")
        try w.write(to: q)
        let g = try GGUFFile(path: q).summary()
        XCTAssertEqual(g.architecture, "gpt2")
        XCTAssertNil(g.config)
        XCTAssertEqual(g.parameters.total, 20)
        XCTAssertEqual(g.parameters.other, 12)
        XCTAssertEqual(g.bitsPerWeight, (8 * 32 + 12 * 16) / 20)
        XCTAssertEqual(g.blockLinearBitsPerWeight, 0, "no block linears")
    }

    func testRolesFromHuggingFaceNames() {
        let cases: [(String, TensorRole)] = [
            ("model.embed_tokens.weight", .embedding), ("lm_head.weight", .outputHead), ("model.norm.weight", .norm),
            ("model.layers.3.input_layernorm.weight", .norm), ("model.layers.3.post_attention_layernorm.weight", .norm),
            ("model.layers.12.self_attn.q_proj.weight", .blockLinear), ("model.layers.0.mlp.down_proj.weight", .blockLinear),
            // A packed format's pieces of one linear all count as that linear.
            ("model.layers.0.mlp.up_proj.codes", .blockLinear), ("model.layers.0.self_attn.o_proj.codebooks", .blockLinear),
            ("model.layers.0.self_attn.o_proj.scales", .blockLinear),
            ("model.layers.0.self_attn.k_proj.bias", .bias),
            ("model.layers.0.self_attn.rotary_emb.inv_freq", .other), ("model.layers.x.mlp.up_proj.weight", .other),
            ("something.else", .other),
        ]
        for (name, role) in cases { XCTAssertEqual(TensorRole(huggingFaceName: name), role, name) }
    }

    func testCustomSummary() {
        // Other formats build the same value from their own rows.
        let rows = [
            TensorSummary(name: "model.layers.0.mlp.up_proj.codes", shape: [128, 8], type: "int16", bytes: 2048, parameters: 128 * 64, role: .blockLinear),
            TensorSummary(name: "model.layers.0.mlp.up_proj.codebooks", shape: [1, 256, 8], type: "F16", bytes: 4096, parameters: 0, role: .blockLinear),
        ]
        let s = CheckpointSummary(path: "x", format: "AQLM packed", architecture: "llama", config: nil, metadata: [], tensors: rows)
        XCTAssertEqual(s.parameters.blockLinears, 8192)
        XCTAssertEqual(s.blockLinearBitsPerWeight, 8 * 6144 / 8192)
    }
}
