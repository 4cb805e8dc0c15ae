import Checkpoint
import Foundation
import FuzzSupport
import PackedFormat

/// Opening a packed AQLM checkpoint whose files come from arbitrary bytes. Two small valid
/// checkpoints are written once (one `model.safetensors`; the same tensors in two shards with
/// an index); each input replaces one of their files, chosen by its first byte, and the
/// directory is read as every command reads it: `PackedCheckpoint.read` (codes in memory),
/// `openModel` (straight into the kernels' layout) and `inspect`'s summary.
enum Layout {
    /// The files an input can replace: (directory, file name).
    nonisolated(unsafe) static var targets: [(directory: String, file: String)] = []
    /// Each target file's valid contents, written back after every input.
    nonisolated(unsafe) static var originals: [[UInt8]] = []

    static let fileNames = [HuggingFaceConfig.fileName, SafeTensorsCheckpoint.singleFileName, HuggingFaceTokenizer.fileName,
                            HuggingFaceTokenizer.configFileName]

    static func make() throws {
        let scheme = SeedModels.packedSchemes[0].scheme
        let single = try SeedModels.writePacked(SeedModels.packedModel(scheme: scheme), name: "packed")
        let sharded = try SeedModels.writePacked(SeedModels.packedModel(scheme: scheme), name: "packed-sharded")
        try shard(sharded)
        targets = fileNames.map { (single, $0) } + [(sharded, SafeTensorsCheckpoint.indexFileName)]
        originals = targets.map { fileBytes($0.directory + "/" + $0.file) }
    }

    /// Splits `directory`'s model.safetensors into two shards listed by model.safetensors.index.json.
    static func shard(_ directory: String) throws {
        let whole = directory + "/" + SafeTensorsCheckpoint.singleFileName
        let file = try SafeTensorsFile(path: whole)
        var writers = [SafeTensorsWriter(metadata: ["format": "pt"]), SafeTensorsWriter(metadata: ["format": "pt"])]
        let shardNames = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        var weightMap: [(String, JSONValue)] = []
        for (i, info) in file.tensors.enumerated() {
            try writers[i % 2].add(info.name, dtype: info.dtype, shape: info.shape, bytes: try file.bytes(info.name))
            weightMap.append((info.name, .string(shardNames[i % 2])))
        }
        for (writer, name) in zip(writers, shardNames) { try writer.write(to: directory + "/" + name) }
        try FileManager.default.removeItem(atPath: whole)
        try writeJSONFile(.object([("metadata", .object([("total_size", .int(0))])), ("weight_map", .object(weightMap))]),
                          to: directory + "/" + SafeTensorsCheckpoint.indexFileName)
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked {
        try Layout.make()
        var seeds = Layout.originals.enumerated().map { i, bytes in
            (name: "\(i)-\(Layout.targets[i].file)", bytes: [UInt8(i)] + bytes)
        }
        // The other schemes' config and codes: valid files that disagree with the rest of the directory.
        for (name, scheme) in SeedModels.packedSchemes.dropFirst() {
            let dir = try SeedModels.writePacked(SeedModels.packedModel(scheme: scheme), name: "seed-packed-\(name)")
            for i in 0..<2 { seeds.append(("\(i)-\(name)-\(Layout.fileNames[i])", [UInt8(i)] + fileBytes(dir + "/" + Layout.fileNames[i]))) }
        }
        return seeds
    }
    do {
        try Layout.make()
    } catch {
        harnessFailure("cannot write the base checkpoints: \(error)")
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    guard let selector = input.first else { return 0 }
    let index = Int(selector) % Layout.targets.count
    let (directory, file) = Layout.targets[index]
    let path = directory + "/" + file
    Scratch.write(UnsafeRawBufferPointer(rebasing: input.dropFirst()), to: path)
    defer { Scratch.write(Layout.originals[index], to: path) }

    if let packed = try? PackedCheckpoint.read(directory: directory) {
        require(packed.linears.values.allSatisfy { $0.codes.allSatisfy { Int($0) < packed.scheme.codebookSize } },
                "a code outside its codebook was accepted")
    }
    _ = try? openModel(directory)
    _ = try? summarizeCheckpoint(directory)
    return 0
}
