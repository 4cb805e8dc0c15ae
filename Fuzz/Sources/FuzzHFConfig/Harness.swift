import Checkpoint
import FuzzSupport

/// config.json on arbitrary bytes: the JSON parser (with a serialize-and-parse-again
/// round trip), the Hugging Face config reader, the tensor list it implies, and the
/// writer's config read back to the same model description.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked {
        var seeds = try SeedModels.configs.map { name, config in
            (name: "\(name).json", bytes: Array(try HuggingFaceConfig.json(for: config, bosTokenId: 1, eosTokenId: 2).serialized().utf8))
        }
        for (name, scheme) in SeedModels.packedSchemes {
            let dir = try SeedModels.writePacked(SeedModels.packedModel(scheme: scheme), name: "seed-packed-\(name)")
            seeds.append(("packed-\(name).json", fileBytes(dir + "/" + HuggingFaceConfig.fileName)))
        }
        return seeds
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let json = try? JSONValue(parsing: fuzzInput(data, size)) else { return 0 }
    for indent in [nil, 2] {
        let text = json.serialized(indent: indent)
        require((try? JSONValue(parsing: text)) == json, "JSON does not read back as written: \(text.prefix(200))")
    }
    guard let config = try? HuggingFaceConfig(json: json, path: "config.json") else { return 0 }
    let shapes = config.llama.expectedShapes
    require(shapes.allSatisfy { $0.1.allSatisfy { $0 > 0 } }, "config implies a tensor with an empty dimension")
    _ = config.quantizationMethod
    guard let written = try? HuggingFaceConfig.json(for: config.llama, bosTokenId: config.bosTokenId, eosTokenId: config.eosTokenId) else {
        return 0
    }
    let again = try? HuggingFaceConfig(json: written, path: "config.json")
    require(again?.llama == config.llama, "written config reads back as \(String(describing: again?.llama)), not \(config.llama)")
    return 0
}
