import CBLAS

/// How an embedding table stores its values.
public enum EmbeddingPrecision: String, Sendable, CaseIterable, Codable {
    /// Float32 as loaded: the dense model's exact path (the head runs through sgemv/sgemm).
    case f32
    /// IEEE half precision, 2 bytes a value.
    case f16
    /// ggml's Q8_0: each run of 32 values of a row as int8 q with one fp16 step d, value = d·q,
    /// d = max|x| / 127. 34 bytes per 32 values.
    case q8

    /// Bytes per stored value, scales included.
    public var bytesPerValue: Double {
        switch self {
        case .f32: return 4
        case .f16: return 2
        case .q8: return Double(q8BlockSize + 2) / Double(q8BlockSize)
        }
    }
}

/// Values per Q8_0 block (one fp16 step each).
public let q8BlockSize = 32

/// A table the requested precision cannot hold: `description` names the table and the reason.
public struct EmbeddingTableError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The token embedding table [rows × width] (rows = vocabulary), in Float32, F16 or Q8_0.
///
/// It is both the model's input lookup (`row(_:into:)` dequantizes one row on the fly) and, as a
/// `LinearOperator` y = x · Tableᵀ, the output head of models that tie the two (SmolLM2: 28 M of
/// its 135 M parameters, 113 MB in Float32, read once per decoded token). Reduced precisions
/// compute from the stored values directly: for a few tokens, F16 rows as SIMD dot products and
/// Q8_0 rows as VNNI int8 dot products with int8-quantized activations (`Q8RowTiles`), on both
/// cores (the table streams from memory once per call); for more, rows dequantized 32 at a
/// time into weight panels for the 512-bit micro-kernel (Float32 activations, exact).
public struct EmbeddingTable: LinearOperator, @unchecked Sendable {
    public let rows: Int
    public let width: Int
    let storage: Storage

    enum Storage {
        case f32([Float])
        case f16([UInt16])
        /// Q8_0 values and steps in the row-tiled layout of the VNNI decode kernel (`Q8RowTiles`),
        /// the only copy: row lookups and dequantized tiles read it too.
        case q8(Q8RowTiles)
    }

    public var precision: EmbeddingPrecision {
        switch storage {
        case .f32: return .f32
        case .f16: return .f16
        case .q8: return .q8
        }
    }

    public var inputSize: Int { width }
    public var outputSize: Int { rows }

    public var weightBytes: Int {
        switch storage {
        case .f32(let v): return v.count * 4
        case .f16(let v): return v.count * 2
        case .q8(let tiles): return tiles.byteCount
        }
    }

    /// Token counts up to this take the row-dot path; more go through weight panels.
    public static let smallBatchLimit = 4

    /// A Float32 table over `values` [rows × width], row-major (the array is shared, not copied).
    public init(float32 values: [Float], rows: Int, width: Int) {
        precondition(rows > 0 && width > 0 && values.count == rows * width, "values are not [\(rows) × \(width)]")
        self.init(rows: rows, width: width, storage: .f32(values))
    }

    private init(rows: Int, width: Int, storage: Storage) {
        self.rows = rows
        self.width = width
        self.storage = storage
    }

    /// `values` [rows × width] stored at `precision` (Float32 shares the array).
    /// - Parameter name: the tensor's name, for error messages.
    public init(values: [Float], rows: Int, width: Int, precision: EmbeddingPrecision,
                name: String = "embedding table") throws {
        guard rows > 0, width > 0, values.count == rows * width else {
            throw EmbeddingTableError("\(name): \(values.count) values are not [\(rows) × \(width)]")
        }
        if precision == .f32 {
            self.init(float32: values, rows: rows, width: width)
            return
        }
        try self.init(rows: rows, width: width, precision: precision, name: name) { r, out in
            values.withUnsafeBufferPointer { out.update(from: $0.baseAddress! + r * width, count: width) }
        }
    }

    /// A table from fp16 values [rows × width], little-endian bytes as a checkpoint stores them
    /// (no alignment needed), converted row by row: no Float32 copy of the whole table is made.
    /// `consumed`, if given, is called with the bytes of each run of rows already converted (for
    /// a memory-mapped source to give back its pages while the rest is converted).
    public init(float16Bytes bytes: UnsafeRawBufferPointer, rows: Int, width: Int, precision: EmbeddingPrecision,
                name: String = "embedding table", consumed: ((UnsafeRawBufferPointer) -> Void)? = nil) throws {
        guard rows > 0, width > 0, bytes.count == rows * width * 2 else {
            throw EmbeddingTableError("\(name): \(bytes.count) bytes are not [\(rows) × \(width)] fp16 values")
        }
        func half(_ i: Int) -> UInt16 { UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        if precision == .f16 {
            self.init(rows: rows, width: width, storage: .f16((0..<(rows * width)).map(half)))
            return
        }
        try self.init(rows: rows, width: width, precision: precision, name: name,
                      rowsDone: consumed.map { release in { release(UnsafeRawBufferPointer(rebasing: bytes[($0.lowerBound * width * 2)..<($0.upperBound * width * 2)])) } }) { r, out in
            for i in 0..<width { out[i] = Float(Float16(bitPattern: half(r * width + i))) }
        }
    }

    /// A table from ggml Q8_0 blocks as a GGUF file stores them (block_q8_0 { f16 d; i8 qs[32] },
    /// rows of width/32 blocks, no alignment needed): the same values and steps rearranged into
    /// `Q8RowTiles` (the file's pages are not needed after), never widened to Float32.
    /// `consumed` as in `init(float16Bytes:)`.
    public init(q8Blocks bytes: UnsafeRawBufferPointer, rows: Int, width: Int, name: String = "embedding table",
                consumed: ((UnsafeRawBufferPointer) -> Void)? = nil) throws {
        let blockBytes = 2 + q8BlockSize
        guard rows > 0, width > 0, width % q8BlockSize == 0, bytes.count == rows * width / q8BlockSize * blockBytes else {
            throw EmbeddingTableError("\(name): \(bytes.count) bytes are not [\(rows) × \(width)] in Q8_0 blocks")
        }
        let blocks = width / q8BlockSize
        let tiles = Self.q8Tiles(rows: rows, width: width) { r, values, steps in
            for b in 0..<blocks {
                let at = (r * blocks + b) * blockBytes
                steps[b] = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt16.self))
                UnsafeMutableRawPointer(values + b * q8BlockSize).copyMemory(from: bytes.baseAddress! + at + 2, byteCount: q8BlockSize)
            }
            // The row is copied out: its pages (and the run's before it) may go.
            if let consumed, (r + 1) % Self.rowsPerRelease == 0 || r + 1 == rows {
                let first = r / Self.rowsPerRelease * Self.rowsPerRelease
                consumed(UnsafeRawBufferPointer(rebasing: bytes[(first * blocks * blockBytes)..<((r + 1) * blocks * blockBytes)]))
            }
        }
        self.init(rows: rows, width: width, storage: .q8(tiles))
    }

    /// Q8RowTiles filled row by row: `fill(r, values, steps)` writes row r's `width` int8 values
    /// and its width/32 fp16 steps into the scratch it is given.
    static func q8Tiles(rows: Int, width: Int,
                        fill: (Int, UnsafeMutablePointer<Int8>, UnsafeMutablePointer<UInt16>) throws -> Void) rethrows -> Q8RowTiles {
        var tiles = Q8RowTiles(rows: rows, width: width)
        let values = UnsafeMutablePointer<Int8>.allocate(capacity: width)
        let steps = UnsafeMutablePointer<UInt16>.allocate(capacity: width / q8BlockSize)
        defer { values.deallocate(); steps.deallocate() }
        for r in 0..<rows {
            try fill(r, values, steps)
            tiles.setRow(r, values: values, steps: steps)
        }
        return tiles
    }

    /// Rows between calls of a source's `consumed` callback (~1 MB of fp16 at width 576).
    static let rowsPerRelease = 1024

    /// Builds the storage one Float32 row at a time from `fillRow(row, buffer)`, so no Float32
    /// copy of the whole table exists unless `precision` is Float32. `rowsDone`, if given, is
    /// called with each run of `rowsPerRelease` rows (and the last, shorter one) once they are
    /// stored.
    public init(rows: Int, width: Int, precision: EmbeddingPrecision, name: String,
                rowsDone: ((Range<Int>) -> Void)? = nil,
                fillRow fill: (Int, UnsafeMutablePointer<Float>) -> Void) throws {
        self.rows = rows
        self.width = width
        let row = UnsafeMutablePointer<Float>.allocate(capacity: width)
        defer { row.deallocate() }
        // The source's rows before `r` are stored once `fillRow(r)` is asked for (each branch
        // stores row r - 1 before filling row r), so runs are reported as the next begins.
        func fillRow(_ r: Int, _ out: UnsafeMutablePointer<Float>) {
            if let rowsDone, r > 0, r % Self.rowsPerRelease == 0 { rowsDone((r - Self.rowsPerRelease)..<r) }
            fill(r, out)
        }
        defer {
            if let rowsDone { rowsDone((rows - 1) / Self.rowsPerRelease * Self.rowsPerRelease ..< rows) }
        }
        switch precision {
        case .f32:
            var values = [Float](repeating: 0, count: rows * width)
            values.withUnsafeMutableBufferPointer { v in
                for r in 0..<rows { fillRow(r, v.baseAddress! + r * width) }
            }
            storage = .f32(values)
        case .f16:
            var bits = [UInt16](repeating: 0, count: rows * width)
            bits.withUnsafeMutableBufferPointer { b in
                for r in 0..<rows {
                    fillRow(r, row)
                    for i in 0..<width { b[r * width + i] = Float16(row[i]).bitPattern }
                }
            }
            storage = .f16(bits)
        case .q8:
            guard width % q8BlockSize == 0 else {
                throw EmbeddingTableError("\(name): width \(width) is not a multiple of \(q8BlockSize); Q8_0 cannot store it (use f16)")
            }
            storage = .q8(try Self.q8Tiles(rows: rows, width: width) { r, values, steps in
                fillRow(r, row)
                guard quantizeRowQ8(row, count: width, into: values, scales: steps) else {
                    throw EmbeddingTableError("\(name): row \(r) holds a NaN, an infinity or a value beyond fp16 range; Q8_0 cannot store it")
                }
            })
        }
    }

    /// The same table at another precision (Float32 → Float32 shares the array).
    public func converted(to precision: EmbeddingPrecision, name: String = "embedding table") throws -> EmbeddingTable {
        if precision == self.precision { return self }
        if case .f16(let bits) = storage {
            return try bits.withUnsafeBytes {
                try EmbeddingTable(float16Bytes: $0, rows: rows, width: width, precision: precision, name: name)
            }
        }
        return try EmbeddingTable(rows: rows, width: width, precision: precision, name: name) { r, out in
            self.row(r, into: out)
        }
    }

    /// The table as a tied output head: a Float32 table as the `DenseLinear` over its own array
    /// (what code that inspects dense weights expects), any other as itself.
    public var headLinear: any LinearOperator {
        if case .f32(let values) = storage { return DenseLinear(weights: values, outputSize: rows, inputSize: width) }
        return self
    }

    /// Whether `other` reads the same stored values (a tied head is the embedding itself).
    public func sharesStorage(with other: EmbeddingTable) -> Bool {
        func address<T>(_ a: [T]) -> UnsafeRawPointer? { a.withUnsafeBytes { $0.baseAddress } }
        switch (storage, other.storage) {
        case (.f32(let a), .f32(let b)): return address(a) == address(b)
        case (.f16(let a), .f16(let b)): return address(a) == address(b)
        case (.q8(let a), .q8(let b)): return a.sharesStorage(with: b)
        default: return false
        }
    }

    /// The Float32 values of row `index` (the embedding of token `index`) into `out[0..<width]`.
    public func row(_ index: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(index >= 0 && index < rows, "row \(index) outside 0..<\(rows)")
        dequantizeRows(index ..< index + 1, into: out)
    }

    /// The whole table in Float32 (the reference the kernels are tested against).
    public func dequantized() -> [Float] {
        if case .f32(let values) = storage { return values }
        var out = [Float](repeating: 0, count: rows * width)
        out.withUnsafeMutableBufferPointer { dequantizeRows(0..<rows, into: $0.baseAddress!) }
        return out
    }

    /// Whether every stored value is finite (Q8_0 values always are; their scales are checked).
    public var allFinite: Bool {
        switch storage {
        case .f32(let v): return v.allSatisfy { $0.isFinite }
        case .f16(let v): return v.allSatisfy { $0 & 0x7C00 != 0x7C00 }
        case .q8(let tiles): return tiles.stepsFinite
        }
    }

    /// Rows `rows` in Float32 into `out` [rows.count × width].
    public func dequantizeRows(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) outside 0..<\(rows)")
        let n = range.count * width, first = range.lowerBound * width
        switch storage {
        case .f32(let values):
            values.withUnsafeBufferPointer { out.update(from: $0.baseAddress! + first, count: n) }
        case .f16(let bits):
            bits.withUnsafeBufferPointer { widenHalves($0.baseAddress! + first, count: n, into: out) }
        case .q8(let tiles):
            for (i, r) in range.enumerated() { tiles.dequantizeRow(r, into: out + i * width) }
        }
    }
}
