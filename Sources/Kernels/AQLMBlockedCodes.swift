/// Codes of B ≤ 8 layers re-laid out for the lookup-table kernel: rows in blocks of 32
/// (`aqlmBlockRows`), each block holding, table by table (t = group·M + codebook), the 32 codes
/// of its rows. The kernel loads one table's 32 codes with one 32-byte load and widens them to
/// 16-bit lanes; `vpdpwssd` then folds even lanes into one int32 accumulator and odd lanes into
/// another, so inside a block byte 2i is row i and byte 2i+1 is row 16+i, making the two
/// accumulators rows 0..<16 and 16..<32. Padding rows (past d_out) have code 0.
struct AQLMBlockedCodes: Sendable {
    let bytes: [UInt8]
    let rows: Int
    let tables: Int

    var blockCount: Int { (rows + aqlmBlockRows - 1) / aqlmBlockRows }
    var blockStride: Int { tables * aqlmBlockRows }

    /// - Parameter rowMajor: HF layout [rows, tables] (tables = d_in/G · M).
    init(rowMajor: [UInt8], rows: Int, tables: Int) {
        self.rows = rows
        self.tables = tables
        let blocks = (rows + aqlmBlockRows - 1) / aqlmBlockRows
        var bytes = [UInt8](repeating: 0, count: blocks * tables * aqlmBlockRows)
        for r in 0..<rows {
            let base = (r / aqlmBlockRows) * tables * aqlmBlockRows + Self.lane(ofRowInBlock: r % aqlmBlockRows)
            for t in 0..<tables {
                bytes[base + t * aqlmBlockRows] = rowMajor[r * tables + t]
            }
        }
        self.bytes = bytes
    }

    /// Byte position inside a block's 32 codes of the row `offset` rows into the block.
    @inline(__always)
    static func lane(ofRowInBlock offset: Int) -> Int {
        offset < 16 ? 2 * offset : 2 * (offset - 16) + 1
    }

    @inline(__always)
    func code(row: Int, table: Int) -> UInt8 {
        bytes[(row / aqlmBlockRows) * blockStride + table * aqlmBlockRows + Self.lane(ofRowInBlock: row % aqlmBlockRows)]
    }
}

/// Rows per code block of the lookup-table kernel (32 int16 lanes of a 512-bit register).
let aqlmBlockRows = 32
/// Entries of one lookup table: B ≤ 8 codebooks are padded to 256 codewords.
let aqlmTableEntries = 256
