import Checkpoint
import FuzzSupport
import Tokenizer

/// The GGUF reader on arbitrary bytes: header, metadata, tensor infos, then everything a model
/// load derives from them (config, vocabulary, BPE tables, every tensor dequantized, the
/// Hugging Face renaming and q/k un-permutation, shape validation) and `inspect`'s summary.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked { try SeedModels.ggufFiles() }
    return 0
}

let inputPath = Scratch.path("input.gguf")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    Scratch.write(fuzzInput(data, size), to: inputPath)
    guard let file = try? GGUFFile(path: inputPath) else { return 0 }
    for info in file.tensors {
        require(info.offset >= 0 && info.offset + info.byteCount <= size, "tensor '\(info.name)' lies outside the file")
        _ = try? file.floats(info)
    }
    _ = try? file.llamaConfig()
    if let spec = try? file.tokenizerSpec(), let tokenizer = try? BPETokenizer(spec: spec) {
        let ids = tokenizer.encode("Hello world, 123 <|endoftext|> héllo", parseSpecial: true)
        require(ids.allSatisfy { (0..<tokenizer.vocabSize).contains($0) }, "token id outside the vocabulary")
        _ = tokenizer.decode(ids)
    }
    _ = try? file.modelWeights()
    _ = file.summary()
    return 0
}
