import Kernels
import XCTest

/// AQLM kernels against the definition (`applyReference`, Double accumulation) and against the
/// dense path (`dequantize()` + `DenseLinear`), on seeded random codes over awkward sizes.
final class AQLMLinearTests: XCTestCase {
    private func scheme(_ m: Int, _ bits: Int, _ g: Int) -> AQLMScheme {
        AQLMScheme(codebookCount: m, codeBits: bits, groupSize: g)
    }

    private func gaussian(_ count: Int, seed: UInt64) -> [Float] {
        var random = SeededRandom(seed: seed)
        return (0..<count).map { _ in random.nextGaussian() }
    }

    /// Token rows with one input group 30× larger than the rest (LLM activations have such
    /// outlier channels): the case a single table scale per token would handle worst.
    private func inputs(tokens: Int, size: Int, groupSize: Int, seed: UInt64) -> [Float] {
        var x = gaussian(tokens * size, seed: seed)
        for t in 0..<tokens {
            for k in 0..<groupSize { x[t * size + k] *= 30 }
        }
        return x
    }

    /// |fast − reference| ≤ |scales[r]| · decodeErrorBound(x_t) + 2 ulp of the reference.
    private func assertDecodeMatchesReference(_ layer: AQLMLinear, tokens: Int, seed: UInt64,
                                              file: StaticString = #filePath, line: UInt = #line) {
        let x = inputs(tokens: tokens, size: layer.inputSize, groupSize: layer.scheme.groupSize, seed: seed)
        var fast = [Float](repeating: .nan, count: tokens * layer.outputSize)
        var reference = [Float](repeating: .nan, count: tokens * layer.outputSize)
        layer.applyDecode(x, &fast, tokens: tokens)
        layer.applyReference(x, &reference, tokens: tokens)
        x.withUnsafeBufferPointer { xs in
            for t in 0..<tokens {
                let bound = layer.decodeErrorBound(xs.baseAddress! + t * layer.inputSize)
                for r in 0..<layer.outputSize {
                    let i = t * layer.outputSize + r
                    let tolerance = abs(layer.scales[r]) * bound + 2 * reference[i].ulp
                    let error = abs(fast[i] - reference[i])
                    if !(error <= tolerance) {
                        XCTFail("\(layer.scheme) [\(layer.outputSize),\(layer.inputSize)] token \(t) row \(r): "
                                + "fast \(fast[i]) reference \(reference[i]) tolerance \(tolerance)", file: file, line: line)
                        return
                    }
                }
                // The tolerance must stay far below the outputs' size, or the check would be vacuous.
                let rms = (reference[t * layer.outputSize ..< (t + 1) * layer.outputSize].map { $0 * $0 }.reduce(0, +)
                    / Float(layer.outputSize)).squareRoot()
                XCTAssertLessThan(bound, 3e-3 * rms, "tolerance too loose to test anything", file: file, line: line)
            }
        }
    }

    /// Runs `body` with two workers splitting every layer's tables (however small), restoring
    /// the defaults after.
    private func withTwoWorkersAlways(_ body: () throws -> Void) rethrows {
        let (threads, work) = (Threads.count, AQLMLinear.parallelDecodeWork)
        defer { Threads.set(threads); AQLMLinear.parallelDecodeWork = work }
        Threads.set(2)
        AQLMLinear.parallelDecodeWork = 0
        try body()
    }

    func testLookupDecodeMatchesReferenceOverAwkwardShapes() throws {
        // (d_out, d_in, scheme): d_out off the 64-row block and 4-block group sizes (420 rows: a
        // group of 4 blocks then one of 3), few groups, chunks of 5 groups (M = 3), partial last
        // chunks, B < 8.
        let cases: [(Int, Int, AQLMScheme)] = [
            (33, 16, scheme(2, 8, 8)), (161, 576, scheme(2, 8, 8)), (257, 136, scheme(1, 8, 8)),
            (70, 40, scheme(3, 8, 8)), (129, 64, scheme(4, 8, 16)), (100, 48, scheme(3, 8, 4)),
            (5, 8, scheme(1, 8, 8)), (45, 32, scheme(2, 6, 8)), (200, 1536, scheme(2, 8, 8)),
            (420, 64, scheme(2, 8, 8)),
        ]
        try withTwoWorkersAlways {
            for (i, (dOut, dIn, s)) in cases.enumerated() {
                let layer = try AQLMLinear.random(outputSize: dOut, inputSize: dIn, scheme: s, seed: UInt64(10 + i))
                for tokens in 1...5 {
                    assertDecodeMatchesReference(layer, tokens: tokens, seed: UInt64(100 * i + tokens))
                }
            }
        }
    }

    /// The decode split and the prefill tiles are fixed by the shape, so every output bit is
    /// the same at 1, 2 or 3 workers (the count follows the machine's load).
    func testDecodeAndPrefillAreBitIdenticalAtOneTwoThreeWorkers() throws {
        let layer = try AQLMLinear.random(outputSize: 300, inputSize: 576, scheme: scheme(2, 8, 8), seed: 3)
        for tokens in [2, 40] {
            let x = inputs(tokens: tokens, size: 576, groupSize: 8, seed: 4)
            var outputs: [[Float]] = []
            try withTwoWorkersAlways {
                for workers in [1, 2, 3] {
                    Threads.set(workers)
                    var y = [Float](repeating: 0, count: 300 * tokens)
                    layer.apply(x, &y, tokens: tokens)
                    outputs.append(y)
                }
            }
            XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[1].map(\.bitPattern), "\(tokens) tokens, 1 vs 2 workers")
            XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[2].map(\.bitPattern), "\(tokens) tokens, 1 vs 3 workers")
        }
    }

    /// Linears sharing an input decoded in one loop (q/k/v, gate/up: their split-K parts run
    /// longest first across the layers) give each layer's own decode bit for bit, at 1, 2 and 3
    /// workers, and match the reference.
    func testLayersDecodedTogetherEqualEachAloneAtAnyWorkerCount() throws {
        let shapes = [(300, 576), (70, 576), (576, 576), (5, 576)]
        let layers = try shapes.enumerated().map { i, shape in
            try AQLMLinear.random(outputSize: shape.0, inputSize: shape.1, scheme: scheme(2, 8, 8), seed: UInt64(60 + i))
        }
        let saved = Threads.count
        defer { Threads.set(saved) }
        for tokens in [1, 3] {
            let x = inputs(tokens: tokens, size: 576, groupSize: 8, seed: UInt64(70 + tokens))
            Threads.set(1)
            let alone = layers.map { layer in
                var y = [Float](repeating: .nan, count: tokens * layer.outputSize)
                layer.apply(x, &y, tokens: tokens)
                return y
            }
            for workers in [1, 2, 3] {
                Threads.set(workers)
                let outputs = layers.map { layer -> UnsafeMutablePointer<Float> in
                    let y = UnsafeMutablePointer<Float>.allocate(capacity: tokens * layer.outputSize)
                    y.initialize(repeating: .nan, count: tokens * layer.outputSize)
                    return y
                }
                defer { outputs.forEach { $0.deallocate() } }
                x.withUnsafeBufferPointer { xp in
                    AQLMLinear.applyLookupTablesTogether(Array(zip(layers, outputs)), to: xp.baseAddress!, tokens: tokens)
                }
                let together = zip(layers, outputs).map { Array(UnsafeBufferPointer(start: $1, count: tokens * $0.outputSize)) }
                for (i, layer) in layers.enumerated() {
                    XCTAssertEqual(together[i].map(\.bitPattern), alone[i].map(\.bitPattern),
                                   "layer \(i) [\(layer.outputSize),576], \(tokens) tokens, \(workers) workers")
                }
            }
            for layer in layers { assertDecodeMatchesReference(layer, tokens: tokens, seed: UInt64(80 + tokens)) }
        }
    }

    func testWideCodeDecodeMatchesReference() throws {
        for (i, (dOut, dIn, s)) in [(40, 16, scheme(1, 16, 8)), (37, 24, scheme(2, 10, 8)), (65, 64, scheme(1, 12, 16))].enumerated() {
            let layer = try AQLMLinear.random(outputSize: dOut, inputSize: dIn, scheme: s, seed: UInt64(50 + i))
            for tokens in [1, 3] {
                assertDecodeMatchesReference(layer, tokens: tokens, seed: UInt64(7 * i + tokens))
            }
        }
    }

    /// apply() (lookup tables up to 4 tokens, dequantized tiles + sgemm beyond) equals the
    /// dense product with the dequantized weight.
    func testApplyMatchesDequantizedDenseProduct() throws {
        try withTwoWorkersAlways { try checkApplyMatchesDequantizedDenseProduct() }
    }

    private func checkApplyMatchesDequantizedDenseProduct() throws {
        for (i, (dOut, dIn, s)) in [(200, 96, scheme(2, 8, 8)), (150, 64, scheme(1, 16, 8)), (64, 896, scheme(2, 8, 8))].enumerated() {
            let layer = try AQLMLinear.random(outputSize: dOut, inputSize: dIn, scheme: s, seed: UInt64(20 + i))
            let weight = layer.dequantize()
            let dense = DenseLinear(weights: weight, outputSize: dOut, inputSize: dIn)
            for tokens in [1, 3, 17, 128] {
                let x = gaussian(tokens * dIn, seed: UInt64(tokens))
                var y = [Float](repeating: .nan, count: tokens * dOut)
                var expected = [Float](repeating: .nan, count: tokens * dOut)
                layer.apply(x, &y, tokens: tokens)
                dense.apply(x, &expected, tokens: tokens)
                var worst = (excess: Float(0), index: 0)
                for t in 0..<tokens {
                    for r in 0..<dOut {
                        // Scale of the sum: Σ_k |W[r,k]·x[t,k]|. Lookup tables are 15-bit, the
                        // rest is Float32 with sums of ≤ d_in terms.
                        var magnitude: Float = 0
                        for k in 0..<dIn { magnitude += abs(weight[r * dIn + k] * x[t * dIn + k]) }
                        let i = t * dOut + r
                        let excess = abs(y[i] - expected[i]) / (2e-4 * magnitude)
                        if !(excess <= worst.excess), !worst.excess.isNaN { worst = (excess, i) }  // NaN sticks
                    }
                }
                XCTAssertLessThanOrEqual(worst.excess, 1, "\(s) tokens \(tokens): y[\(worst.index)] = \(y[worst.index]), "
                                         + "dense \(expected[worst.index])")
            }
        }
    }

    /// The prefill path (weight panels + the 512-bit micro-kernel) against the product with the
    /// dequantized weight summed in Double, on the widths of the models in use (576, 896, 4864)
    /// and awkward ones: rows off the 32-row panel, token counts off the 12-token block, 1x16
    /// (wide codes), M = 3, and G = 16 (the one-value-at-a-time dequantizer).
    func testPrefillMatchesDoubleProductOnWideAndOddShapes() throws {
        let cases: [(rows: Int, width: Int, scheme: AQLMScheme, tokens: [Int])] = [
            (33, 896, scheme(2, 8, 8), [5, 13, 128]), (96, 576, scheme(2, 8, 8), [24, 37]),
            (40, 4864, scheme(2, 8, 8), [5, 30]), (70, 200, scheme(1, 16, 8), [12, 17]),
            (37, 24, scheme(3, 8, 8), [7]), (50, 64, scheme(2, 6, 16), [6, 25]),
        ]
        try withTwoWorkersAlways {
            for (i, c) in cases.enumerated() {
                let layer = try AQLMLinear.random(outputSize: c.rows, inputSize: c.width, scheme: c.scheme, seed: UInt64(60 + i))
                let weight = layer.dequantize()
                for tokens in c.tokens {
                    let x = inputs(tokens: tokens, size: c.width, groupSize: c.scheme.groupSize, seed: UInt64(7 * i + tokens))
                    var y = [Float](repeating: .nan, count: tokens * c.rows)
                    layer.applyPrefill(x, &y, tokens: tokens)
                    var worst = (excess: Float(0), index: 0)
                    for t in 0..<tokens {
                        for r in 0..<c.rows {
                            var sum = 0.0, magnitude = 0.0
                            for k in 0..<c.width {
                                let term = Double(weight[r * c.width + k]) * Double(x[t * c.width + k])
                                sum += term
                                magnitude += abs(term)
                            }
                            // Float32 sums of `width` terms (and the scale applied once, after).
                            let excess = Float(abs(Double(y[t * c.rows + r]) - sum) / (3e-5 * magnitude + 1e-30))
                            if !(excess <= worst.excess), !worst.excess.isNaN { worst = (excess, t * c.rows + r) }
                        }
                    }
                    XCTAssertLessThanOrEqual(worst.excess, 1, "\(c.scheme) [\(c.rows), \(c.width)] \(tokens) tokens: y[\(worst.index)]")
                }
            }
        }
    }

    /// The HF layout by hand: Ŵ[r, j·G ..< (j+1)·G] = scales[r] · Σ_m codebooks[m][codes[r, j, m]].
    func testDequantizeFollowsTheHuggingFaceLayout() throws {
        // M = 2 codebooks of 2^1 codewords of length G = 2; d_out = 2, d_in = 4 (2 groups).
        let codebooks: [Float] = [1, 2, 3, 4,  // codebook 0: codeword 0 = (1, 2), codeword 1 = (3, 4)
                                  10, 20, 30, 40]  // codebook 1: (10, 20), (30, 40)
        let codes: [UInt8] = [0, 1, 1, 0,  // row 0: group 0 codes (0, 1), group 1 codes (1, 0)
                              1, 1, 0, 0]  // row 1: group 0 (1, 1), group 1 (0, 0)
        let layer = try AQLMLinear(codes: codes, codebooks: codebooks, scales: [2, -1], outputSize: 2, inputSize: 4,
                                   scheme: scheme(2, 1, 2))
        XCTAssertEqual(layer.dequantize(), [62, 84, 26, 48,   // 2·((1,2)+(30,40)), 2·((3,4)+(10,20))
                                            -33, -44, -11, -22])  // −((3,4)+(30,40)), −((1,2)+(10,20))
        var rows = [Float](repeating: 0, count: 4)
        layer.dequantizeRows(1..<2, into: &rows)
        XCTAssertEqual(rows, [-33, -44, -11, -22])
        XCTAssertEqual(layer.code(row: 0, group: 1, codebook: 0), 1)
        var y = [Float](repeating: 0, count: 2)
        layer.apply([1, 0, 0, 1], &y, tokens: 1)
        XCTAssertEqual(y[0], 62 + 48, accuracy: 0.01)
        XCTAssertEqual(y[1], -33 - 22, accuracy: 0.01)
    }

    func testDequantizeRowsMatchesWholeDequantize() throws {
        for s in [scheme(2, 8, 8), scheme(1, 16, 8), scheme(3, 8, 4)] {
            let layer = try AQLMLinear.random(outputSize: 70, inputSize: 48, scheme: s, seed: 9)
            let whole = layer.dequantize()
            var part = [Float](repeating: 0, count: 9 * 48)
            layer.dequantizeRows(31..<40, into: &part)
            XCTAssertEqual(part, Array(whole[31 * 48 ..< 40 * 48]), "\(s)")
        }
    }

    func testMalformedLayersAreRejectedWithTheirName() {
        let s = scheme(2, 8, 8)
        func message(_ body: () throws -> AQLMLinear) -> String {
            do { _ = try body(); return "no error" } catch { return "\(error)" }
        }
        let codebooks = [Float](repeating: 0, count: 2 * 256 * 8)
        XCTAssertEqual(message { try AQLMLinear(codes: [UInt8](repeating: 0, count: 7), codebooks: codebooks, scales: [1, 1],
                                                outputSize: 2, inputSize: 16, scheme: s, name: "blk.0.q") },
                       "blk.0.q: codes hold 7 entries, expected [2, 2, 2]")
        XCTAssertEqual(message { try AQLMLinear(codes: [UInt8](repeating: 0, count: 8), codebooks: codebooks, scales: [1],
                                                outputSize: 2, inputSize: 16, scheme: s, name: "blk.0.q") },
                       "blk.0.q: scales hold 1 floats, expected 2")
        XCTAssertEqual(message { try AQLMLinear(codes: [UInt8](repeating: 0, count: 8), codebooks: codebooks, scales: [1, 1],
                                                outputSize: 2, inputSize: 12, scheme: s, name: "blk.0.q") },
                       "blk.0.q: d_in 12 is not a multiple of group size 8")
        XCTAssertEqual(message { try AQLMLinear(codes: [UInt16](repeating: 300, count: 8), codebooks: codebooks, scales: [1, 1],
                                                outputSize: 2, inputSize: 16, scheme: s, name: "blk.0.q") },
                       "blk.0.q: code 300 out of range for 8-bit codebooks")
        XCTAssertEqual(message { try AQLMLinear(codes: [UInt8](repeating: 0, count: 8), codebooks: codebooks, scales: [1, 1],
                                                outputSize: 2, inputSize: 16, scheme: scheme(1, 16, 8), name: "blk.0.q") },
                       "blk.0.q: 16-bit codes need UInt16 storage, got UInt8")
        var broken = codebooks
        broken[77] = .nan
        XCTAssertEqual(message { try AQLMLinear(codes: [UInt8](repeating: 0, count: 8), codebooks: broken, scales: [1, 1],
                                                outputSize: 2, inputSize: 16, scheme: s, name: "blk.0.q") },
                       "blk.0.q: codebooks[77] is nan")
        XCTAssertEqual(message { try AQLMLinear.random(outputSize: 4, inputSize: 12, scheme: s, seed: 1) },
                       "random [4,12] 2x8 g8: d_in must be a positive multiple of the group size, B in 1...16")
    }

    func testPackedLayerIsSmallerThanDense() throws {
        let layer = try AQLMLinear.random(outputSize: 1536, inputSize: 576, scheme: scheme(2, 8, 8), seed: 1)
        // 2 bits per weight of codes + 2 × 16 KB of codebooks (HF and transposed) + scales,
        // against 32 bits per weight.
        XCTAssertEqual(layer.weightBytes, 1536 * 72 * 2 + 2 * (2 * 256 * 8 * 4) + 1536 * 4)
        XCTAssertLessThan(layer.weightBytes * 10, 1536 * 576 * 4)
    }

    /// A NaN or infinity in an input row reaches the outputs it touches, as in the dense product,
    /// instead of vanishing into the table scale.
    func testNonFiniteInputsPropagate() throws {
        let layer = try AQLMLinear.random(outputSize: 70, inputSize: 64, scheme: scheme(2, 8, 8), seed: 2)
        for bad in [Float.nan, .infinity] {
            var x = gaussian(64, seed: 3)
            x[10] = bad
            var y = [Float](repeating: 0, count: 70)
            layer.apply(x, &y, tokens: 1)
            XCTAssertTrue(y.allSatisfy { $0.isNaN }, "\(bad)")
        }
    }
}
