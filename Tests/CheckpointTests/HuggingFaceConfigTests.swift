import XCTest
import Foundation
import Checkpoint

final class HuggingFaceConfigTests: TemporaryDirectoryTestCase {
    func parse(_ text: String, path: String = "/m/config.json") throws -> HuggingFaceConfig {
        try HuggingFaceConfig(json: try JSONValue(parsing: text), path: path)
    }

    /// SmolLM2-135M's config.json as published (abridged to the keys that matter plus some noise).
    let smolLM2 = """
    {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
     "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576,
     "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": true,
     "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
     "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
     "rope_interleaved": false, "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
     "torch_dtype": "bfloat16", "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 49152}
    """

    func testLlama() throws {
        let c = try parse(smolLM2)
        XCTAssertEqual(c.llama, LlamaConfig(architecture: "llama", vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536,
                                            numLayers: 30, numHeads: 9, numKVHeads: 3, headDim: 64, contextLength: 8192,
                                            ropeTheta: 100000, rmsNormEps: 1e-5, tiedEmbeddings: true, attentionBias: false))
        XCTAssertEqual(c.bosTokenId, 1)
        XCTAssertEqual(c.eosTokenId, 2)
        XCTAssertNil(c.quantizationMethod)
        XCTAssertFalse(c.llama.expectedShapes.contains { $0.0 == "lm_head.weight" })
    }

    func testMistralDefaultsAndSlidingWindow() throws {
        let c = try parse("""
        {"architectures": ["MistralForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
         "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
         "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
         "sliding_window": 4096, "tie_word_embeddings": false, "vocab_size": 32000, "eos_token_id": [2, 3]}
        """)
        XCTAssertEqual(c.llama.architecture, "mistral")
        XCTAssertEqual(c.llama.headDim, 128)
        XCTAssertEqual(c.llama.numKVHeads, 8)
        XCTAssertEqual(c.llama.contextLength, 4096)
        XCTAssertFalse(c.llama.attentionBias)
        XCTAssertFalse(c.llama.tiedEmbeddings)
        XCTAssertEqual(c.eosTokenId, 2)
        XCTAssertTrue(c.llama.expectedShapes.contains { $0.0 == "lm_head.weight" && $0.1 == [32000, 4096] })
    }

    func testQwen2HasAttentionBiases() throws {
        let c = try parse("""
        {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 896, "intermediate_size": 4864,
         "max_position_embeddings": 32768, "model_type": "qwen2", "num_attention_heads": 14,
         "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
         "sliding_window": 32768, "use_sliding_window": false, "tie_word_embeddings": true, "vocab_size": 151936}
        """)
        XCTAssertEqual(c.llama.architecture, "qwen2")
        XCTAssertTrue(c.llama.attentionBias)
        XCTAssertEqual(c.llama.ropeTheta, 1_000_000)
        XCTAssertEqual(c.llama.rmsNormEps, 1e-6)
        XCTAssertEqual(c.llama.contextLength, 32768)
        let shapes = Dictionary(uniqueKeysWithValues: c.llama.expectedShapes)
        XCTAssertEqual(shapes["model.layers.0.self_attn.q_proj.bias"], [896])
        XCTAssertEqual(shapes["model.layers.23.self_attn.k_proj.bias"], [128])
        XCTAssertEqual(shapes["model.layers.23.self_attn.v_proj.bias"], [128])
    }

    func testExplicitHeadDimAndModelTypeFallback() throws {
        let c = try parse("""
        {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
         "num_hidden_layers": 2, "head_dim": 32, "vocab_size": 100, "attention_bias": true}
        """)
        XCTAssertEqual(c.llama.headDim, 32)
        XCTAssertEqual(c.llama.numKVHeads, 4)
        XCTAssertEqual(c.llama.contextLength, 2048)
        XCTAssertEqual(c.llama.ropeTheta, 10000)
        XCTAssertTrue(c.llama.attentionBias)
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: c.llama.expectedShapes)["model.layers.0.self_attn.q_proj.weight"], [128, 64])
    }

    func testUnsupportedArchitectureNamesTheFile() {
        for (text, name) in [(#"{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}"#, "GPT2LMHeadModel"),
                             (#"{"architectures": ["LlamaForSequenceClassification"], "model_type": "llama"}"#, "LlamaForSequenceClassification"),
                             (#"{"model_type": "phi3"}"#, "phi3")] {
            XCTAssertThrowsError(try parse(text, path: "/ckpt/config.json")) { error in
                XCTAssertEqual(error as? CheckpointError, .unsupportedArchitecture("/ckpt/config.json", name))
                XCTAssertTrue("\(error)".hasPrefix("/ckpt/config.json: unsupported architecture '\(name)'"))
            }
        }
    }

    /// transformers 5 writes rope_parameters instead of rope_theta (a wrong theta ran silently:
    /// a 5.x-saved SmolLM2 gave PPL 103 against transformers' 75).
    func testTransformers5RopeParameters() throws {
        let five = smolLM2.replacingOccurrences(of: #""rope_theta": 100000,"#,
                                                with: #""rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},"#)
        XCTAssertFalse(five.contains("\"rope_theta\": 100000,"))
        XCTAssertEqual(try parse(five).llama.ropeTheta, 100000)
        let scaled = five.replacingOccurrences(of: #""rope_type": "default""#, with: #""rope_type": "yarn""#)
        XCTAssertThrowsError(try parse(scaled, path: "c.json")) {
            XCTAssertEqual($0 as? CheckpointError, .invalid("c.json", detail: "rope_parameters.rope_type 'yarn' is not supported (only default)"))
        }
    }

    func testInvalidValues() {
        let base = #""architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 10"#
        let cases: [(String, CheckpointError)] = [
            ("{\(base)}", .missingKey("c.json", key: "num_attention_heads")),
            ("{\(base), \"num_attention_heads\": 4, \"num_key_value_heads\": 3}",
             .invalid("c.json", detail: "num_attention_heads 4 is not a multiple of num_key_value_heads 3")),
            ("{\(base), \"num_attention_heads\": \"4\"}", .invalid("c.json", detail: "num_attention_heads is \"4\", expected a positive integer up to 16777216")),
            ("{\(base), \"num_attention_heads\": 4, \"hidden_act\": \"gelu\"}", .invalid("c.json", detail: "hidden_act 'gelu' is not supported (only silu)")),
            ("{\(base), \"num_attention_heads\": 4, \"tie_word_embeddings\": 1}", .invalid("c.json", detail: "tie_word_embeddings is 1, expected true or false")),
            ("{\(base), \"num_attention_heads\": 4, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}",
             .invalid("c.json", detail: #"rope_scaling {"type":"linear","factor":2.0} is not supported"#)),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try parse(text, path: "c.json")) { XCTAssertEqual($0 as? CheckpointError, expected) }
        }
    }

    func testBadJSONFileNamesTheFile() throws {
        let dir = try newDirectory()
        let p = (dir as NSString).appendingPathComponent("config.json")
        try "{\"hidden_size\": 5,}".write(toFile: p, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try HuggingFaceConfig(path: p)) { error in
            guard case .invalid(p, let d)? = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssertTrue(d.hasPrefix("invalid JSON at byte 18"), d)
        }
        XCTAssertThrowsError(try HuggingFaceConfig(path: p + ".missing")) {
            XCTAssertEqual($0 as? CheckpointError, .missingFile(p + ".missing"))
        }
    }

    func testWriterRoundTripWithExtraKeys() throws {
        let dir = try newDirectory()
        let p = (dir as NSString).appendingPathComponent("config.json")
        for config in [
            try parse(smolLM2).llama,
            LlamaConfig(architecture: "qwen2", vocabSize: 300, hiddenSize: 32, intermediateSize: 48, numLayers: 3, numHeads: 4,
                        numKVHeads: 2, headDim: 16, contextLength: 512, ropeTheta: 1e6, rmsNormEps: 1e-6, tiedEmbeddings: false,
                        attentionBias: true),
            LlamaConfig(architecture: "mistral", vocabSize: 300, hiddenSize: 32, intermediateSize: 48, numLayers: 1, numHeads: 4,
                        numKVHeads: 1, contextLength: 128, ropeTheta: 10000, rmsNormEps: 3e-5, tiedEmbeddings: true),
        ] {
            let quant: JSONValue = .object([("quant_method", .string("aqlm")), ("nbits_per_codebook", .int(16)),
                                            ("num_codebooks", .int(1)), ("linear_weights_not_to_quantize", .array([.string("lm_head.weight")]))])
            try HuggingFaceConfig.write(config, bosTokenId: 1, eosTokenId: 2, extra: [("quantization_config", quant), ("torch_dtype", .string("float16"))], to: p)
            let back = try HuggingFaceConfig(path: p)
            XCTAssertEqual(back.llama, config)
            XCTAssertEqual(back.bosTokenId, 1)
            XCTAssertEqual(back.eosTokenId, 2)
            XCTAssertEqual(back.quantizationMethod, "aqlm")
            XCTAssertEqual(back.json["quantization_config"], quant)
            XCTAssertEqual(back.json["torch_dtype"]?.string, "float16")
        }
        XCTAssertThrowsError(try HuggingFaceConfig.json(for: LlamaConfig(
            architecture: "gemma", vocabSize: 1, hiddenSize: 4, intermediateSize: 4, numLayers: 1, numHeads: 1, numKVHeads: 1,
            contextLength: 1, ropeTheta: 1, rmsNormEps: 1, tiedEmbeddings: true)))
    }

    func testJSONValueParsesAndWritesFaithfully() throws {
        let text = #"{"b": [1, -2.5e-3, true, null], "a": "tab\t \"q\" \u00e9 \ud83d\ude00 /", "n": {}, "e": []}"#
        let v = try JSONValue(parsing: text)
        XCTAssertEqual(v.members?.map(\.0), ["b", "a", "n", "e"])
        XCTAssertEqual(v["a"]?.string, "tab\t \"q\" é 😀 /")
        XCTAssertEqual(v["b"]?.array?[1], .number("-2.5e-3"))
        XCTAssertEqual(v["b"]?.array?[1].double, -0.0025)
        XCTAssertEqual(v["b"]?.array?[0].int, 1)
        XCTAssertNil(v["b"]?.array?[1].int)
        XCTAssertEqual(try JSONValue(parsing: v.serialized(indent: nil)), v)
        XCTAssertEqual(try JSONValue(parsing: v.serialized(indent: 2)), v)
        XCTAssertEqual(JSONValue.float(1e-5).serialized(indent: nil), "1e-05")
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "01", "1.", "-", "\"\\x\"", "\"\\ud800\"", "tru", "[1] 2", "{\"a\":1,}"] {
            XCTAssertThrowsError(try JSONValue(parsing: bad), bad)
        }
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        XCTAssertThrowsError(try JSONValue(parsing: deep))
    }
}
