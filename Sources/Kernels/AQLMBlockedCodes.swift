/// Codes of B ≤ 8 layers re-laid out in the order the lookup-table kernel reads them, so one
/// layer's codes are one sequential stream (which the hardware prefetchers follow; with codes
/// streaming from DRAM this measured ~1.5× faster than one stream per block).
///
/// Rows are in blocks of 64 (`aqlmBlockRows`) and blocks in groups of up to four
/// (`aqlmQuadBlocks`, the kernel's register tile): within a group, table by table
/// (t = group·M + codebook), the 64 codes of each block, so the kernel loads one table's codes
/// for 64 rows with one 64-byte load. Only the last group may have fewer than four blocks.
///
/// The kernel looks up the low and high bytes of the int16 table entries separately (byte
/// lanes), interleaves them into words with `vpunpcklbw`/`vpunpckhbw` (which work per 128-bit
/// lane: bytes 0-7 and 8-15 of each lane), and widens even and odd words into separate int32
/// accumulators with `vpdpwssd`. Placing row 16s + q (s, q < 4·4) at byte
/// 16·(q/4) + 8·(s/2) + 2·(q%4) + s%2 makes accumulator s hold rows 16s ..< 16s+16 in order.
/// Padding rows (past d_out) have code 0.
struct AQLMBlockedCodes: Sendable {
    let bytes: [UInt8]
    let rows: Int
    let tables: Int

    var blockCount: Int { (rows + aqlmBlockRows - 1) / aqlmBlockRows }
    var quadCount: Int { (blockCount + aqlmQuadBlocks - 1) / aqlmQuadBlocks }

    /// Blocks in group `quad` (4, or fewer for the last).
    @inline(__always)
    func blocks(inQuad quad: Int) -> Int { min(aqlmQuadBlocks, blockCount - quad * aqlmQuadBlocks) }

    /// Offset of the codes of table `table` for the first block of group `quad`; the group's
    /// block b follows at + b·64 and table t+1 at + blocks(inQuad:)·64.
    @inline(__always)
    func offset(quad: Int, table: Int) -> Int {
        (quad * aqlmQuadBlocks * tables + table * blocks(inQuad: quad)) * aqlmBlockRows
    }

    /// - Parameter rowMajor: HF layout [rows, tables] (tables = d_in/G · M).
    init(rowMajor: [UInt8], rows: Int, tables: Int) {
        var layout = AQLMBlockedCodes(bytes: [], rows: rows, tables: tables)
        var bytes = [UInt8](repeating: 0, count: layout.blockCount * tables * aqlmBlockRows)
        for r in 0..<rows {
            for t in 0..<tables {
                bytes[layout.position(row: r, table: t)] = rowMajor[r * tables + t]
            }
        }
        layout = AQLMBlockedCodes(bytes: bytes, rows: rows, tables: tables)
        self = layout
    }

    private init(bytes: [UInt8], rows: Int, tables: Int) {
        self.bytes = bytes
        self.rows = rows
        self.tables = tables
    }

    @inline(__always)
    private func position(row: Int, table: Int) -> Int {
        let block = row / aqlmBlockRows
        return offset(quad: block / aqlmQuadBlocks, table: table) + (block % aqlmQuadBlocks) * aqlmBlockRows
            + Self.lane(ofRowInBlock: row % aqlmBlockRows)
    }

    /// Byte position inside a block's 64 codes of the row `offset` rows into the block.
    @inline(__always)
    static func lane(ofRowInBlock offset: Int) -> Int {
        let s = offset / 16, q = offset % 16
        return 16 * (q / 4) + 8 * (s / 2) + 2 * (q % 4) + s % 2
    }

    @inline(__always)
    func code(row: Int, table: Int) -> UInt8 {
        bytes[position(row: row, table: table)]
    }
}

/// Rows per code block of the lookup-table kernel (64 byte lanes of a 512-bit register).
let aqlmBlockRows = 64
/// Blocks the kernel sums at once, sharing each table's register loads.
let aqlmQuadBlocks = 4
/// Entries of one lookup table: B ≤ 8 codebooks are padded to 256 codewords.
let aqlmTableEntries = 256
/// Bytes of one int16 lookup table stored as two byte planes (low bytes, then high bytes).
let aqlmTableBytes = 2 * aqlmTableEntries
