import CBLAS
import Kernels
import XCTest

/// The panelled BLAS wrappers: every output bit is the same at 1, 2 and 3 threads, and a
/// product is exactly one plain single-threaded cblas_sgemm per panel (on panels copied out
/// to their own buffers, so the wrapper's pointer arithmetic is checked too).
final class PanelledBLASTests: XCTestCase {
    private func randoms(_ count: Int, seed: UInt64) -> [Float] {
        var random = SeededRandom(seed: seed)
        return (0..<count).map { _ in random.nextFloat() * 2 - 1 }
    }

    /// `body` at 1, 2 and 3 workers of the pool, the count restored after.
    private func atThreadCounts<T>(_ body: () -> T) -> [T] {
        let saved = (Threads.count, Threads.backend)
        defer { Threads.count = saved.0; Threads.backend = saved.1 }
        Threads.backend = .pool
        return [1, 2, 3].map { count in
            Threads.count = count
            return body()
        }
    }

    private struct Case {
        let transA: Transpose, transB: Transpose
        let m: Int, n: Int, k: Int
        let alpha: Float, beta: Float
        /// Extra columns beyond each operand's stored width (leading dimension = width + pad).
        let padA: Int, padB: Int, padC: Int
        var lda: Int { (transA == .trans ? m : k) + padA }
        var ldb: Int { (transB == .trans ? k : n) + padB }
        var ldc: Int { n + padC }
        var aRows: Int { transA == .trans ? k : m }
        var bRows: Int { transB == .trans ? n : k }
    }

    private let cases: [Case] = [
        Case(transA: .noTrans, transB: .trans, m: 300, n: 777, k: 129, alpha: 1, beta: 0, padA: 0, padB: 0, padC: 0),
        Case(transA: .noTrans, transB: .noTrans, m: 613, n: 530, k: 67, alpha: 0.5, beta: 1, padA: 3, padB: 5, padC: 7),
        Case(transA: .trans, transB: .noTrans, m: 541, n: 611, k: 45, alpha: -1.25, beta: 0.75, padA: 1, padB: 0, padC: 2),
        Case(transA: .trans, transB: .trans, m: 70, n: 1100, k: 33, alpha: 2, beta: 0, padA: 4, padB: 9, padC: 0),
        Case(transA: .trans, transB: .noTrans, m: 700, n: 200, k: 40, alpha: 1, beta: 0.25, padA: 3, padB: 2, padC: 1),
        Case(transA: .noTrans, transB: .trans, m: 37, n: 45, k: 19, alpha: 1, beta: 0.5, padA: 2, padB: 1, padC: 3),
    ]

    /// The wrapper's C for `c0` as the initial C.
    private func product(_ t: Case, _ a: [Float], _ b: [Float], _ c0: [Float]) -> [Float] {
        var c = c0
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    sgemm(t.transA, t.transB, t.m, t.n, t.k, t.alpha, a.baseAddress!, t.lda, b.baseAddress!, t.ldb,
                          t.beta, c.baseAddress!, t.ldc)
                }
            }
        }
        return c
    }

    /// One cblas_sgemm per panel of `ProductPanels`, each on its own packed copies of the
    /// panel's operands (leading dimension = width), written back into C.
    private func panelByPanel(_ t: Case, _ a: [Float], _ b: [Float], _ c0: [Float]) -> [Float] {
        var c = c0
        let panels = ProductPanels(m: t.m, n: t.n, k: t.k)
        for i in 0..<panels.rowPanels {
            for j in 0..<panels.columnPanels {
                let rows = panels.rows(i), columns = panels.columns(j)
                // op(A) rows `rows`: stored rows (no transpose) or stored columns (transposed).
                let aPanel: [Float] = t.transA == .trans
                    ? (0..<t.k).flatMap { r in rows.map { a[r * t.lda + $0] } }
                    : rows.flatMap { r in (0..<t.k).map { a[r * t.lda + $0] } }
                let bPanel: [Float] = t.transB == .trans
                    ? columns.flatMap { r in (0..<t.k).map { b[r * t.ldb + $0] } }
                    : (0..<t.k).flatMap { r in columns.map { b[r * t.ldb + $0] } }
                var cPanel = rows.flatMap { r in columns.map { c[r * t.ldc + $0] } }
                let lda = t.transA == .trans ? rows.count : t.k, ldb = t.transB == .trans ? t.k : columns.count
                cblas_sgemm(CblasRowMajor, t.transA == .trans ? CblasTrans : CblasNoTrans,
                            t.transB == .trans ? CblasTrans : CblasNoTrans, Int32(rows.count), Int32(columns.count),
                            Int32(t.k), t.alpha, aPanel, Int32(lda), bPanel, Int32(ldb), t.beta, &cPanel, Int32(columns.count))
                for (r, row) in rows.enumerated() {
                    for (q, column) in columns.enumerated() { c[row * t.ldc + column] = cPanel[r * columns.count + q] }
                }
            }
        }
        return c
    }

    func testProductIsBitIdenticalAtOneTwoThreeThreadsAndIsOneCallPerPanel() {
        BLASThreads.useCallingThreadOnly()
        for (index, t) in cases.enumerated() {
            let a = randoms(t.aRows * t.lda, seed: UInt64(10 + index))
            let b = randoms(t.bRows * t.ldb, seed: UInt64(20 + index))
            let c0 = randoms(t.m * t.ldc, seed: UInt64(30 + index))
            let panels = ProductPanels(m: t.m, n: t.n, k: t.k)
            if index < 5 { XCTAssertGreaterThan(panels.tiles, 1, "case \(index) should be cut into panels") }
            if index == 4 { XCTAssertGreaterThan(panels.rowPanels, 1, "case 4 should be cut into row panels") }
            let results = atThreadCounts { product(t, a, b, c0) }
            let expected = panelByPanel(t, a, b, c0)
            for (count, result) in zip([1, 2, 3], results) {
                XCTAssertEqual(result.map(\.bitPattern), expected.map(\.bitPattern), "case \(index) at \(count) threads")
            }
            // And it is the product: against a Float64 reference, padding columns untouched.
            for r in 0..<t.m {
                for j in 0..<t.ldc {
                    let got = results[0][r * t.ldc + j]
                    guard j < t.n else {
                        XCTAssertEqual(got, c0[r * t.ldc + j], "case \(index): padding of C written")
                        continue
                    }
                    var sum = 0.0
                    for p in 0..<t.k {
                        let x = t.transA == .trans ? a[p * t.lda + r] : a[r * t.lda + p]
                        let y = t.transB == .trans ? b[j * t.ldb + p] : b[p * t.ldb + j]
                        sum += Double(x) * Double(y)
                    }
                    let want = Double(t.alpha) * sum + Double(t.beta) * Double(c0[r * t.ldc + j])
                    XCTAssertEqual(Double(got), want, accuracy: 1e-4 * Double(t.k), "case \(index) at [\(r), \(j)]")
                }
            }
        }
    }

    func testPanelsDependOnTheShapeOnlyAndAreWide() {
        for (m, n, k) in [(512, 576, 576), (512, 1536, 576), (512, 49152, 576), (512, 4864, 896), (512, 192, 576), (2048, 576, 1536), (130, 300, 64)] {
            let panels = ProductPanels(m: m, n: n, k: k)
            // Two panels, or more only while each stays `widePanel` long.
            if panels.tiles > ProductPanels.targetTiles {
                XCTAssertGreaterThanOrEqual(max(m / panels.rowPanels, n / panels.columnPanels), ProductPanels.widePanel - 15)
            }
            var covered = 0
            for i in 0..<panels.rowPanels {
                let rows = panels.rows(i)
                XCTAssertEqual(rows.lowerBound, i == 0 ? 0 : panels.rows(i - 1).upperBound)
                if panels.rowPanels > 1 { XCTAssertGreaterThanOrEqual(rows.count, ProductPanels.minimumPanel - 15) }
                covered += rows.count
            }
            XCTAssertEqual(covered, m)
            covered = 0
            for j in 0..<panels.columnPanels {
                let columns = panels.columns(j)
                if panels.columnPanels > 1 { XCTAssertGreaterThanOrEqual(columns.count, ProductPanels.minimumPanel - 15) }
                covered += columns.count
            }
            XCTAssertEqual(covered, n)
        }
        // The prefill of a 512-token chunk is split for two cores, through a 576-wide layer in
        // columns (the cheaper cut), through a 192-wide one in rows.
        XCTAssertEqual(ProductPanels(m: 512, n: 576, k: 576).columnPanels, 2)
        XCTAssertEqual(ProductPanels(m: 512, n: 192, k: 576).rowPanels, 2)
        // Wider layers give machines with more cores more panels: Qwen's 4864 and Llama-3-8B's 14336.
        XCTAssertEqual(ProductPanels(m: 512, n: 1536, k: 576).columnPanels, 2)
        XCTAssertEqual(ProductPanels(m: 512, n: 4864, k: 896).columnPanels, 4)
        XCTAssertEqual(ProductPanels(m: 512, n: 14336, k: 4096).columnPanels, 14)
    }

    func testGramUpperIsBitIdenticalAtOneTwoThreeThreadsAndLeavesTheLowerTriangle() {
        let rows = 300, n = 700
        let x = randoms(rows * n, seed: 5)
        let sentinel: Float = 12345
        let results = atThreadCounts { () -> [Float] in
            var c = [Float](repeating: sentinel, count: n * n)
            x.withUnsafeBufferPointer { x in
                c.withUnsafeMutableBufferPointer { gramUpper(x.baseAddress!, rows: rows, n: n, $0.baseAddress!) }
            }
            return c
        }
        XCTAssertEqual(results[0].map(\.bitPattern), results[1].map(\.bitPattern))
        XCTAssertEqual(results[0].map(\.bitPattern), results[2].map(\.bitPattern))
        for i in stride(from: 0, to: n, by: 7) {
            for j in 0..<n {
                let got = results[0][i * n + j]
                guard j >= i else {
                    XCTAssertEqual(got, sentinel, "lower triangle [\(i), \(j)] written")
                    continue
                }
                var sum = 0.0
                for r in 0..<rows { sum += Double(x[r * n + i]) * Double(x[r * n + j]) }
                XCTAssertEqual(Double(got), sum, accuracy: 1e-3, "[\(i), \(j)]")
            }
        }
    }

    func testMatrixVectorIsBitIdenticalAtOneTwoThreeThreads() {
        let rows = 1000, columns = 300
        let w = randoms(rows * columns, seed: 6), x = randoms(columns, seed: 7)
        let results = atThreadCounts { () -> [Float] in
            var y = [Float](repeating: 0, count: rows)
            w.withUnsafeBufferPointer { w in
                y.withUnsafeMutableBufferPointer { sgemv(w.baseAddress!, rows: rows, columns: columns, x, $0.baseAddress!) }
            }
            return y
        }
        XCTAssertEqual(results[0].map(\.bitPattern), results[1].map(\.bitPattern))
        XCTAssertEqual(results[0].map(\.bitPattern), results[2].map(\.bitPattern))
        for r in 0..<rows {
            var sum = 0.0
            for j in 0..<columns { sum += Double(w[r * columns + j]) * Double(x[j]) }
            XCTAssertEqual(Double(results[0][r]), sum, accuracy: 1e-3, "row \(r)")
        }
    }
}
