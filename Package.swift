// swift-tools-version:6.0
import PackageDescription

// Numeric targets are built with the CPU's full vector ISA (this project only runs on the
// machine kind it is measured on) and, for the hot-loop kernels only, without bounds checks.
// Parsers (Checkpoint, Tokenizer, PackedFormat) keep every check.
let native: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "native"])]
let kernel: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "native", "-Ounchecked"])]

let package = Package(
    name: "aqlm",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "aqlm", targets: ["AQLMCLI"]),
        // The file parsers, for the libFuzzer harnesses of Fuzz/ (a package of its own, built with
        // its own flags: see tools/fuzz.sh); the product build does not use this library.
        .library(name: "AQLMParsers", targets: ["Checkpoint", "Tokenizer", "Kernels", "Quantizer", "Llama", "PackedFormat"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Debian's OpenBLAS (cblas.h) and LAPACKE (lapacke.h).
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        // Checkpoint formats: GGUF (+ GGML block dequantizers), safetensors, HF config, model description.
        .target(name: "Checkpoint", swiftSettings: native),
        // Byte-level BPE tokenizer (GPT-2 style) with llama.cpp's pre-tokenizer split rules.
        .target(name: "Tokenizer", dependencies: ["Checkpoint"]),
        // Numeric hot loops: SIMD dot products, norms, softmax, AQLM lookup-table matvec, tile dequantize.
        .target(name: "Kernels", dependencies: ["CBLAS"], swiftSettings: kernel),
        // Llama forward pass in Float32 (prefill through sgemm, KV cache decoding).
        .target(name: "Llama", dependencies: ["Checkpoint", "Kernels", "CBLAS"], swiftSettings: native),
        // Perplexity, KL divergence against saved top-k log-probs, sampling and generation.
        .target(name: "Evaluation", dependencies: ["Llama", "Tokenizer", "Kernels"], swiftSettings: native),
        // Calibration text registry, sampling of sequences, XᵀX accumulation.
        .target(name: "Calibration", dependencies: ["Checkpoint", "Tokenizer", "Llama", "Kernels"], swiftSettings: native),
        // AQLM per-layer engine: k-means init, beam search over codes, codebook/scale updates.
        .target(name: "Quantizer", dependencies: ["Kernels", "CBLAS"], swiftSettings: native),
        // Packed AQLM checkpoint (Hugging Face layout): writer and reader.
        .target(name: "PackedFormat", dependencies: ["Checkpoint", "Quantizer", "Kernels", "Llama"]),
        // Training of codebooks, scales and norms (codes frozen): backward pass, Adam, block-wise and end-to-end.
        .target(name: "Finetune",
                dependencies: ["Checkpoint", "Kernels", "Llama", "Quantizer", "PackedFormat", "CBLAS", "Evaluation", "Tokenizer", "Calibration"],
                swiftSettings: native),
        // A whole model quantized block by block against calibration activations, resumable.
        .target(name: "QuantizePipeline",
                dependencies: ["Checkpoint", "Tokenizer", "Llama", "Calibration", "Quantizer", "PackedFormat", "Evaluation", "Kernels", "Finetune"],
                swiftSettings: native),
        // `aqlm sweep`: every scheme quantized and evaluated against the original; table and plot.
        .target(name: "Sweep",
                dependencies: ["QuantizePipeline", "PackedFormat", "Evaluation", "Tokenizer", "Checkpoint", "Llama", "Kernels", "Calibration"],
                swiftSettings: native),
        // The `aqlm` command-line tool: option parsing only.
        .executableTarget(
            name: "AQLMCLI",
            dependencies: [
                "Checkpoint", "Tokenizer", "Llama", "Evaluation", "Calibration", "Quantizer", "PackedFormat", "QuantizePipeline", "Sweep", "Finetune",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: native
        ),
        .testTarget(name: "CheckpointTests", dependencies: ["Checkpoint"]),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer", "Checkpoint"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels"], swiftSettings: native),
        .testTarget(name: "LlamaTests", dependencies: ["Llama", "Checkpoint", "Tokenizer"], swiftSettings: native),
        .testTarget(name: "EvaluationTests", dependencies: ["Evaluation", "Llama", "Checkpoint", "Tokenizer", "PackedFormat", "Quantizer"], swiftSettings: native),
        .testTarget(name: "QuantizerTests", dependencies: ["Quantizer", "Kernels"], swiftSettings: native),
        .testTarget(name: "PackedFormatTests", dependencies: ["PackedFormat", "Quantizer", "Checkpoint"]),
        .testTarget(name: "QuantizePipelineTests", dependencies: ["QuantizePipeline", "PackedFormat", "Checkpoint", "Quantizer", "Calibration", "Kernels", "Llama", "Tokenizer"], swiftSettings: native),
        .testTarget(name: "SweepTests", dependencies: ["Sweep", "QuantizePipeline", "Checkpoint", "Evaluation", "PackedFormat", "Tokenizer"], swiftSettings: native),
        .testTarget(name: "FinetuneTests", dependencies: ["Finetune", "Calibration", "Llama", "Checkpoint", "Kernels", "Quantizer", "PackedFormat", "CBLAS"], swiftSettings: native),
        .testTarget(name: "CLITests", dependencies: ["Checkpoint"]),
    ],
    swiftLanguageModes: [.v5]
)
