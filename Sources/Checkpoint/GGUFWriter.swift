#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// GGUF v3 writer: metadata of every value type, tensors given as Float32 (encoded here as F32,
/// F16, BF16, Q8_0, Q4_0 or Q4_1) or as ready-made blocks of any type, data aligned to
/// `alignment`. The file is written to a temporary name beside the target and renamed over it,
/// so a reader never sees a half-written checkpoint.
///
/// Layout: "GGUF", u32 version, u64 tensor count, u64 metadata count, metadata (key, u32 type,
/// value), tensor infos (name, u32 n_dims, u64 dims (fastest first), u32 type, u64 offset relative
/// to the data section), padding to `alignment`, then each tensor's data padded to `alignment`.
public struct GGUFWriter {
    public let alignment: Int
    private var metadata: [(key: String, value: GGUFValue)] = []
    private var tensors: [PendingTensor] = []

    private struct PendingTensor {
        let name: String
        /// GGML order: dims[0] is the contiguous one.
        let dims: [Int]
        let type: GGMLType
        let bytes: [UInt8]
    }

    /// `alignment` must be a power of two; a value other than GGUF's default 32 is recorded as
    /// `general.alignment`.
    public init(alignment: Int = 32) {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment must be a power of two")
        self.alignment = alignment
        if alignment != 32 { setMetadata("general.alignment", .uint32(UInt32(alignment))) }
    }

    /// Sets `key`, replacing an earlier value in place (keys keep their first position).
    public mutating func setMetadata(_ key: String, _ value: GGUFValue) {
        if let i = metadata.firstIndex(where: { $0.key == key }) {
            metadata[i].value = value
        } else {
            metadata.append((key, value))
        }
    }

    /// Adds a tensor of row-major `shape` (outermost first, as `GGUFTensorInfo.shape`), encoding
    /// `values` as `type` (`type.canEncode`). Rows must be whole blocks of `type`.
    public mutating func addTensor(_ name: String, shape: [Int], type: GGMLType, values: [Float]) throws {
        guard type.canEncode else { throw Self.error(name, "cannot encode \(type.name) (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)") }
        _ = try validate(name, shape: shape, type: type)
        guard shape.reduce(1, *) == values.count else {
            throw Self.error(name, "shape \(shape) needs \(shape.reduce(1, *)) values, got \(values.count)")
        }
        tensors.append(PendingTensor(name: name, dims: shape.reversed(), type: type, bytes: encodeBlocks(values, as: type)))
    }

    /// Adds a tensor whose data is already encoded as `type` (any type, e.g. K-quant blocks).
    public mutating func addTensor(_ name: String, shape: [Int], type: GGMLType, rawBytes: [UInt8]) throws {
        let bytes = try validate(name, shape: shape, type: type)
        guard rawBytes.count == bytes else {
            throw Self.error(name, "\(type.name) \(shape) takes \(bytes) bytes, got \(rawBytes.count)")
        }
        tensors.append(PendingTensor(name: name, dims: shape.reversed(), type: type, bytes: rawBytes))
    }

    /// The data size of a new tensor, after checking its name is new and its rows are whole blocks.
    private func validate(_ name: String, shape: [Int], type: GGMLType) throws -> Int {
        guard !name.isEmpty else { throw Self.error(name, "empty tensor name") }
        guard !tensors.contains(where: { $0.name == name }) else { throw Self.error(name, "added twice") }
        guard (1...4).contains(shape.count), shape.allSatisfy({ $0 >= 0 }) else {
            throw Self.error(name, "shape \(shape) must have 1 to 4 non-negative dimensions")
        }
        guard let rowLength = shape.last, rowLength % type.blockSize == 0,
              let bytes = type.byteCount(elements: shape.reduce(1, *)) else {
            throw Self.error(name, "rows of \(shape.last ?? 0) elements are not whole \(type.name) blocks of \(type.blockSize)")
        }
        return bytes
    }

    private static func error(_ tensor: String, _ detail: String) -> CheckpointError {
        .invalid("GGUF writer", detail: "tensor '\(tensor)': \(detail)")
    }

    // MARK: output

    /// The complete file in memory.
    public func serialized() throws -> [UInt8] {
        var out = try header()
        for t in tensors {
            out += t.bytes
            out += [UInt8](repeating: 0, count: padding(t.bytes.count))
        }
        return out
    }

    /// Writes the file atomically: to `path.tmp-PID` in the same directory, flushed to disk,
    /// then renamed to `path`. On failure the temporary file is removed and `path` is untouched.
    public func write(to path: String) throws {
        let head = try header()
        let temporary = "\(path).tmp-\(getpid())"
        guard let f = fopen(temporary, "wb") else { throw Self.writeError(path) }
        var ok = Self.put(head, f)
        for t in tensors where ok {
            ok = Self.put(t.bytes, f) && Self.put([UInt8](repeating: 0, count: padding(t.bytes.count)), f)
        }
        ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0
        let closed = fclose(f) == 0
        guard ok, closed, rename(temporary, path) == 0 else {
            let error = Self.writeError(path)
            unlink(temporary)
            throw error
        }
    }

    private static func put(_ bytes: [UInt8], _ f: UnsafeMutablePointer<FILE>) -> Bool {
        bytes.isEmpty || bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) } == bytes.count
    }

    private static func writeError(_ path: String) -> CheckpointError {
        .invalid(path, detail: "cannot write: \(String(cString: strerror(errno)))")
    }

    private func padding(_ n: Int) -> Int { (alignment - n % alignment) % alignment }

    /// Everything before the data section, padded to `alignment`.
    private func header() throws -> [UInt8] {
        var out = ByteWriter()
        out.bytes += Array("GGUF".utf8)
        out.put(UInt32(3))
        out.put(UInt64(tensors.count))
        out.put(UInt64(metadata.count))
        for (key, value) in metadata {
            out.putString(key)
            out.put(try Self.typeId(value, key: key))
            try Self.putValue(value, key: key, into: &out)
        }
        var offset = 0
        for t in tensors {
            out.putString(t.name)
            out.put(UInt32(t.dims.count))
            for d in t.dims { out.put(UInt64(d)) }
            out.put(t.type.rawValue)
            out.put(UInt64(offset))
            offset += t.bytes.count + padding(t.bytes.count)
        }
        out.bytes += [UInt8](repeating: 0, count: padding(out.bytes.count))
        return out.bytes
    }

    /// GGUF value type ids: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string,
    /// 9 array, 10 u64, 11 i64, 12 f64.
    static func typeId(_ value: GGUFValue, key: String) throws -> UInt32 {
        switch value {
        case .uint8: return 0
        case .int8: return 1
        case .uint16: return 2
        case .int16: return 3
        case .uint32: return 4
        case .int32: return 5
        case .float32: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        case .uint64: return 10
        case .int64: return 11
        case .float64: return 12
        }
    }

    /// Arrays are written as u32 element type, u64 count, elements; all elements must share one
    /// type (an empty array is written as an empty u8 array).
    static func putValue(_ value: GGUFValue, key: String, into out: inout ByteWriter) throws {
        switch value {
        case .uint8(let v): out.put(v)
        case .int8(let v): out.put(v)
        case .uint16(let v): out.put(v)
        case .int16(let v): out.put(v)
        case .uint32(let v): out.put(v)
        case .int32(let v): out.put(v)
        case .float32(let v): out.put(v.bitPattern)
        case .bool(let v): out.put(UInt8(v ? 1 : 0))
        case .string(let s): out.putString(s)
        case .uint64(let v): out.put(v)
        case .int64(let v): out.put(v)
        case .float64(let v): out.put(v.bitPattern)
        case .array(let items):
            let elementType = try items.first.map { try typeId($0, key: key) } ?? 0
            for item in items where try typeId(item, key: key) != elementType {
                throw CheckpointError.invalid("GGUF writer", detail: "metadata '\(key)': array mixes value types")
            }
            out.put(elementType)
            out.put(UInt64(items.count))
            for item in items { try putValue(item, key: key, into: &out) }
        }
    }
}

/// Little-endian byte sink for the header.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func put<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes += $0 }
    }

    mutating func putString(_ s: String) {
        let utf8 = Array(s.utf8)
        put(UInt64(utf8.count))
        bytes += utf8
    }
}
