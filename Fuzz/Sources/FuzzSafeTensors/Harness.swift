import Checkpoint
import FuzzSupport

/// The safetensors reader on arbitrary bytes: the length prefix, the JSON header, every
/// tensor's dtype/shape/offsets, then each tensor's values read as floats or integers.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked {
        var seeds = try SeedModels.huggingFaceDirectories().map { name, dir in
            (name: "\(name).safetensors", bytes: fileBytes(dir + "/" + SafeTensorsCheckpoint.singleFileName))
        }
        for (name, scheme) in SeedModels.packedSchemes {
            let dir = try SeedModels.writePacked(SeedModels.packedModel(scheme: scheme), name: "seed-packed-\(name)")
            seeds.append(("packed-\(name).safetensors", fileBytes(dir + "/" + SafeTensorsCheckpoint.singleFileName)))
        }
        return seeds
    }
    return 0
}

let inputPath = Scratch.path("model.safetensors")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    Scratch.write(fuzzInput(data, size), to: inputPath)
    guard let file = try? SafeTensorsFile(path: inputPath) else { return 0 }
    for info in file.tensors {
        require(info.dataOffsets.lowerBound >= 0 && file.dataStart + info.dataOffsets.upperBound <= size,
                "tensor '\(info.name)' lies outside the file")
        switch info.dtype {
        case .f32, .f16, .bf16, .f64:
            let values = try? file.floats(info)
            require(values == nil || values!.count == info.elementCount, "'\(info.name)': wrong value count")
        case .i8: _ = try? file.integers(info.name, as: Int8.self)
        case .i16: _ = try? file.integers(info.name, as: Int16.self)
        case .i32: _ = try? file.integers(info.name, as: Int32.self)
        case .u8: _ = try? file.integers(info.name, as: UInt8.self)
        default: _ = try? file.bytes(info.name)
        }
    }
    _ = try? SafeTensorsCheckpoint(file: inputPath)
    return 0
}
