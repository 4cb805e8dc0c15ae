import Kernels
import XCTest

/// Embedding tables in F32/F16/Q8_0: storage against its definition, row lookups and the head's
/// products against a Double product over the dequantized table, on awkward sizes.
final class EmbeddingTableTests: XCTestCase {
    /// Rows whose 32-value blocks span six orders of magnitude (so a per-row or per-table step
    /// would fail the per-block bound), one all-zero block, and a negative extreme.
    private func values(rows: Int, width: Int, seed: UInt64) -> [Float] {
        var random = SeededRandom(seed: seed)
        var v = (0..<(rows * width)).map { i -> Float in
            let block = (i % width) / 32
            return random.nextGaussian() * Float(pow(10.0, Double(block % 6) - 3))
        }
        if width >= 64 {
            for i in 32..<64 { v[i] = 0 }
        }
        v[1] = -7.5
        return v
    }

    private func gaussian(_ count: Int, seed: UInt64) -> [Float] {
        var random = SeededRandom(seed: seed)
        return (0..<count).map { _ in random.nextGaussian() }
    }

    func testQ8StoresEachBlockWithinHalfItsStep() throws {
        let (rows, width) = (37, 96)
        let v = values(rows: rows, width: width, seed: 1)
        let table = try EmbeddingTable(values: v, rows: rows, width: width, precision: .q8)
        XCTAssertEqual(table.precision, .q8)
        // Q8_0's 34 bytes per 32 values, the rows padded to whole 64-row tiles (`Q8RowTiles`).
        XCTAssertEqual(table.weightBytes, 64 * width / 32 * 34)
        let back = table.dequantized()
        for r in 0..<rows {
            for b in 0..<(width / 32) {
                let block = (r * width + b * 32) ..< (r * width + b * 32 + 32)
                let largest = v[block].map(abs).max()!
                // d = fp16(max/127); every value within d/2 of what is stored (d/2 ≤ max/254 · (1 + 2^-10)).
                let halfStep = largest / 254 * (1 + 1.0 / 1024) + Float.leastNormalMagnitude
                for i in block {
                    XCTAssertLessThanOrEqual(abs(back[i] - v[i]), halfStep, "row \(r) value \(i - r * width)")
                }
                if largest == 0 { XCTAssertEqual(Array(back[block]), Array(repeating: 0, count: 32)) }
            }
        }
        // The extreme of each block is stored as ±127 steps: within fp16 rounding of itself.
        XCTAssertEqual(back[1], -7.5, accuracy: 7.5 / 1024)
    }

    func testF16StoresEachValueRoundedToHalf() throws {
        let v = values(rows: 5, width: 40, seed: 2)
        let table = try EmbeddingTable(values: v, rows: 5, width: 40, precision: .f16)
        XCTAssertEqual(table.dequantized(), v.map { Float(Float16($0)) })
        XCTAssertEqual(table.weightBytes, 5 * 40 * 2)
    }

    func testRowLookupIsTheDequantizedRow() throws {
        let (rows, width) = (131, 64)
        let v = values(rows: rows, width: width, seed: 3)
        for precision in EmbeddingPrecision.allCases {
            let table = try EmbeddingTable(values: v, rows: rows, width: width, precision: precision)
            let all = table.dequantized()
            var row = [Float](repeating: .nan, count: width)
            for r in [0, 5, 15, 16, 63, 64, 100, rows - 1] {
                table.row(r, into: &row)
                XCTAssertEqual(row, Array(all[(r * width)..<((r + 1) * width)]), "\(precision) row \(r)")
            }
        }
    }

    /// y = x · Tableᵀ against a Double product over the dequantized table, for token counts on
    /// both sides of the row-dot / weight-panel switch and row counts that leave partial four-row
    /// groups, 64-row tiles, work items and 32-row weight panels. Q8_0 with few tokens quantizes the
    /// activations to int8: it is held to `int8ActivationBound` instead.
    func testHeadProductsMatchTheDequantizedTable() throws {
        let threads = Threads.count
        defer { Threads.set(threads) }
        for workers in [1, 2] {
            Threads.set(workers)
            for (rows, width) in [(1030, 64), (2051, 96), (3, 32)] {
                let v = values(rows: rows, width: width, seed: 4)
                for precision in EmbeddingPrecision.allCases {
                    let table = try EmbeddingTable(values: v, rows: rows, width: width, precision: precision)
                    let w = table.dequantized()
                    for tokens in [1, 3, EmbeddingTable.smallBatchLimit, 7, 33] {
                        let x = gaussian(tokens * width, seed: UInt64(tokens))
                        var y = [Float](repeating: .nan, count: tokens * rows)
                        table.apply(x, &y, tokens: tokens)
                        for t in 0..<tokens {
                            for r in 0..<rows {
                                let (exact, magnitude) = referenceDot(w, row: r, width: width, x, offset: t * width)
                                let error = abs(Double(y[t * rows + r]) - exact)
                                let int8 = precision == .q8 && tokens <= EmbeddingTable.smallBatchLimit
                                let allowed = int8 ? Self.int8ActivationBound(w, row: r, x, token: t, width: width) : 0
                                guard error <= allowed + 1e-5 * magnitude + 1e-30 else {
                                    return XCTFail("\(precision) [\(rows),\(width)] \(workers) workers tokens \(tokens) "
                                                   + "row \(r): \(y[t * rows + r]) vs \(exact)")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The head's backward product g · Table against a Double product over the dequantized
    /// table: rows across several widened panels (and a last partial one), one and two workers.
    func testTransposedProductMatchesTheDequantizedTable() throws {
        let threads = Threads.count
        defer { Threads.set(threads) }
        let panel = EmbeddingTable.transposedPanelRows
        for workers in [1, 2] {
            Threads.set(workers)
            for (rows, width) in [(2 * panel + 77, 64), (5, 96)] {
                let v = values(rows: rows, width: width, seed: 6)
                for precision in EmbeddingPrecision.allCases {
                    let table = try EmbeddingTable(values: v, rows: rows, width: width, precision: precision)
                    let w = table.dequantized()
                    for tokens in [1, 3] {
                        let g = gaussian(tokens * rows, seed: UInt64(10 + tokens))
                        var y = [Float](repeating: .nan, count: tokens * width)
                        table.applyTransposed(g, &y, tokens: tokens)
                        for t in 0..<tokens {
                            for c in 0..<width {
                                var exact = 0.0, magnitude = 0.0
                                for r in 0..<rows {
                                    let term = Double(g[t * rows + r]) * Double(w[r * width + c])
                                    exact += term
                                    magnitude += abs(term)
                                }
                                let error = abs(Double(y[t * width + c]) - exact)
                                guard error <= 1e-5 * magnitude + 1e-30 else {
                                    return XCTFail("\(precision) [\(rows),\(width)] \(workers) workers tokens \(tokens) "
                                                   + "column \(c): \(y[t * width + c]) vs \(exact)")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// How far the decode step's two-term int8 activations (`Q8Activations`: per 32-value block
    /// of largest magnitude M, x ≈ d₀q₀ + d₁q₁ with d₀ = M/127 and d₁ = max|x − d₀q₀|/127 ≤ d₀/254,
    /// so each value off by at most d₁/2 ≤ M/64516) can move one row's dot product with the
    /// Float32 activations: Σ_b Σ_i |w_i| · M_b/64516, plus a little for the Float32 remainder.
    static func int8ActivationBound(_ w: [Float], row r: Int, _ x: [Float], token t: Int, width: Int) -> Double {
        var bound = 0.0
        for b in 0..<(width / 32) {
            let block = (t * width + 32 * b) ..< (t * width + 32 * b + 32)
            let largest = Double(x[block].map(abs).max()!)
            let error = largest / (127 * 508) * (1 + 1e-3) + largest * 1e-7
            for i in 0..<32 { bound += abs(Double(w[r * width + 32 * b + i])) * error }
        }
        return bound
    }

    /// The decode step's VNNI kernel on one token against a Double product with the Float32
    /// activations, within `int8ActivationBound` (plus 2e-6 of Σ|w·x| for the Float32 sums of
    /// the per-block terms). Row counts off every tile and lane boundary, widths of one and
    /// many blocks, activation blocks two orders of magnitude apart, a zero block and a block
    /// with one outlier 300 times its neighbours (where one int8 term alone, llama.cpp's, is
    /// ~100 times outside the bound); one and two workers give the same bits.
    func testInt8DecodeProductIsWithinTheActivationRounding() throws {
        let threads = Threads.count
        defer { Threads.set(threads) }
        for (rows, width) in [(1, 32), (17, 32), (70, 96), (1089, 576)] {
            let table = try EmbeddingTable(values: values(rows: rows, width: width, seed: 9), rows: rows, width: width, precision: .q8)
            let w = table.dequantized()
            var x = gaussian(width, seed: 10)
            for i in 0..<width { x[i] *= Float(pow(10.0, Double(i / 32 % 4) - 2)) }
            x[width - 5] = 300 * Float(pow(10.0, Double((width - 5) / 32 % 4) - 2))
            if width >= 96 { for i in 32..<64 { x[i] = 0 } }
            var outputs: [[Float]] = []
            for workers in [1, 2] {
                Threads.set(workers)
                var y = [Float](repeating: .nan, count: rows)
                table.apply(x, &y, tokens: 1)
                outputs.append(y)
                for r in 0..<rows {
                    let (exact, magnitude) = referenceDot(w, row: r, width: width, x)
                    let bound = Self.int8ActivationBound(w, row: r, x, token: 0, width: width)
                    guard abs(Double(y[r]) - exact) <= bound + 2e-6 * magnitude + 1e-30 else {
                        return XCTFail("[\(rows),\(width)] \(workers) workers row \(r): \(y[r]) vs \(exact), bound \(bound)")
                    }
                }
            }
            XCTAssertEqual(outputs[0], outputs[1], "[\(rows),\(width)]: the worker count must not change the bits")
        }
    }

    /// A non-finite activation gives NaN logits (as the Float32 path would), not a trap or
    /// garbage from converting NaN to an integer.
    func testInt8DecodeOfNonFiniteActivationsIsNaN() throws {
        let table = try EmbeddingTable(values: values(rows: 5, width: 64, seed: 11), rows: 5, width: 64, precision: .q8)
        var x = gaussian(64, seed: 12)
        x[40] = .infinity
        var y = [Float](repeating: 0, count: 5)
        table.apply(x, &y, tokens: 1)
        XCTAssertTrue(y.allSatisfy { $0.isNaN }, "\(y)")
    }

    func testFloat32HeadIsTheDenseLinearExactly() {
        let (rows, width) = (300, 64)
        let v = values(rows: rows, width: width, seed: 5)
        let table = EmbeddingTable(float32: v, rows: rows, width: width)
        let dense = DenseLinear(weights: v, outputSize: rows, inputSize: width)
        for tokens in [1, 9] {
            let x = gaussian(tokens * width, seed: 6)
            var a = [Float](repeating: 0, count: tokens * rows), b = a
            table.apply(x, &a, tokens: tokens)
            dense.apply(x, &b, tokens: tokens)
            XCTAssertEqual(a, b, "tokens \(tokens)")
        }
    }

    func testConversionsAgreeWithDirectStorage() throws {
        let (rows, width) = (9, 64)
        let v = values(rows: rows, width: width, seed: 7)
        let halves = v.map { Float16($0).bitPattern }
        let fromHalves = try halves.withUnsafeBytes {
            try EmbeddingTable(float16Bytes: $0, rows: rows, width: width, precision: .q8)
        }
        let keptHalves = try halves.withUnsafeBytes {
            try EmbeddingTable(float16Bytes: $0, rows: rows, width: width, precision: .f16)
        }
        XCTAssertEqual(keptHalves.dequantized(), halves.map { Float(Float16(bitPattern: $0)) })
        let viaF16 = try EmbeddingTable(values: v, rows: rows, width: width, precision: .f16).converted(to: .q8)
        XCTAssertEqual(fromHalves.dequantized(), viaF16.dequantized())
        let f32 = EmbeddingTable(float32: v, rows: rows, width: width)
        XCTAssertTrue(f32.sharesStorage(with: try f32.converted(to: .f32)))
        XCTAssertFalse(f32.sharesStorage(with: try f32.converted(to: .q8)))
        XCTAssertEqual(try f32.converted(to: .q8).dequantized(),
                       try EmbeddingTable(values: v, rows: rows, width: width, precision: .q8).dequantized())
    }

    /// A memory-mapped source's pages go back while the table is built: the `consumed` byte runs
    /// are in order, do not overlap and cover the whole source (fp16 rows and Q8_0 blocks, a last
    /// run shorter than the others), and the table is the one built without the callback.
    func testConsumedRunsCoverTheSourceInOrder() throws {
        let (rows, width) = (2500, 32)
        let v = values(rows: rows, width: width, seed: 13)
        let halves = v.map { Float16($0).bitPattern }
        let q8 = try EmbeddingTable(values: v, rows: rows, width: width, precision: .q8)
        var blocks: [UInt8] = []
        var row = [Float](repeating: 0, count: width)
        for r in 0..<rows {
            q8.row(r, into: &row)
            let largest = row.map(abs).max()!
            let step = Float16(largest / 127)
            blocks += withUnsafeBytes(of: step.bitPattern.littleEndian, Array.init)
            blocks += row.map { UInt8(bitPattern: Int8(step > 0 ? ($0 / Float(step)).rounded() : 0)) }
        }
        func runs(_ bytes: [UInt8], _ build: (UnsafeRawBufferPointer, @escaping (UnsafeRawBufferPointer) -> Void) throws -> EmbeddingTable)
            rethrows -> (EmbeddingTable, [Range<Int>]) {
            var seen: [Range<Int>] = []
            let table = try bytes.withUnsafeBytes { b in
                try build(b) { run in seen.append((run.baseAddress! - b.baseAddress!) ..< (run.baseAddress! - b.baseAddress! + run.count)) }
            }
            return (table, seen)
        }
        let (fromHalves, halfRuns) = try runs(halves.withUnsafeBytes(Array.init)) {
            try EmbeddingTable(float16Bytes: $0, rows: rows, width: width, precision: .q8, consumed: $1)
        }
        let (fromBlocks, blockRuns) = try runs(blocks) { try EmbeddingTable(q8Blocks: $0, rows: rows, width: width, consumed: $1) }
        for (seen, total) in [(halfRuns, rows * width * 2), (blockRuns, rows * 34)] {
            XCTAssertEqual(seen.count, 3, "\(seen)")
            XCTAssertEqual(seen.first?.lowerBound, 0)
            XCTAssertEqual(seen.last?.upperBound, total)
            for (a, b) in zip(seen, seen.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
        }
        XCTAssertEqual(fromHalves.dequantized(), try halves.withUnsafeBytes {
            try EmbeddingTable(float16Bytes: $0, rows: rows, width: width, precision: .q8)
        }.dequantized())
        XCTAssertEqual(fromBlocks.dequantized(), try blocks.withUnsafeBytes { try EmbeddingTable(q8Blocks: $0, rows: rows, width: width) }.dequantized())
    }

    func testQ8RefusesWhatItCannotStore() {
        XCTAssertThrowsError(try EmbeddingTable(values: [Float](repeating: 1, count: 40), rows: 1, width: 40,
                                                precision: .q8, name: "tok")) { error in
            XCTAssertEqual((error as? EmbeddingTableError)?.description,
                           "tok: width 40 is not a multiple of 32; Q8_0 cannot store it (use f16)")
        }
        var v = [Float](repeating: 1, count: 64)
        v[40] = .nan
        XCTAssertThrowsError(try EmbeddingTable(values: v, rows: 2, width: 32, precision: .q8, name: "tok")) { error in
            XCTAssertTrue("\(error)".hasPrefix("tok: row 1 holds a NaN"), "\(error)")
        }
        XCTAssertThrowsError(try EmbeddingTable(values: [1, 2, 3], rows: 2, width: 2, precision: .f16, name: "tok"))
    }
}
