import CBLAS
import Kernels

/// How the codebook least squares is solved.
public enum CodebookSolver: String, Sendable, CaseIterable {
    /// Cholesky when the normal equations are cheap to assemble (small layers), else conjugate gradient.
    case automatic
    /// Assemble A c = b explicitly and solve it with LAPACK `dposv`.
    case cholesky
    /// Matrix-free preconditioned conjugate gradient, warm-started from the current codebooks.
    case conjugateGradient
}

/// Codebooks minimising tr((W−Ŵ)H(W−Ŵ)ᵀ) for fixed codes and scales (AQLM §3.3; the reference
/// runs Adam, but the objective is quadratic in the M·2^B·g codebook entries, so we solve it).
///
/// With ŵ_r = s_r L_r c (L_r the one-hot map from codebook entries to row r), the normal
/// equations are A c = b, A = Σ_r s_r² L_rᵀ H L_r, b = Σ_r s_r L_rᵀ H w_r. Assembling A touches
/// (d_in/g·M)² blocks of g×g per row: rows·(d_in·M)² scattered adds (2·10⁹ for a [1536, 576]
/// layer in 2x8), and factoring the 4096² system costs 23 GFLOP per update. A·x instead costs one
/// sgemm (Ŵ(x)·H) plus a gather and a scatter, and PCG warm-started from the current codebooks
/// with the block-Jacobi preconditioner (each code's g×g diagonal block) reaches the same
/// objective in about 3 iterations at real shapes; so layers use PCG unless the explicit system
/// is small (`NormalEquations.choleskyIsCheap`), where LAPACK's Cholesky solves it exactly.
/// Codes no group uses have zero rows in A and keep their values.
///
/// Conjugate gradient stops after `maxIterations` or once an iteration lowers the objective by
/// less than `tolerance` times the starting objective.
public func solveCodebooks(
    _ code: AdditiveCode, problem: LayerProblem, solver: CodebookSolver = .automatic, maxIterations: Int = 30,
    tolerance: Double = 1e-5
) -> AdditiveCode {
    solveCodebooksEvaluated(code, problem: problem, solver: solver, maxIterations: maxIterations, tolerance: tolerance).code
}

func solveCodebooksEvaluated(
    _ code: AdditiveCode, problem: LayerProblem, solver: CodebookSolver, maxIterations: Int, tolerance: Double = 1e-5
) -> EvaluatedCode {
    precondition(code.dOut == problem.dOut && code.dIn == problem.dIn)
    let system = NormalEquations(code: code, problem: problem)
    let useCholesky = solver == .cholesky || (solver == .automatic && system.choleskyIsCheap)
    if useCholesky, let solution = system.solveByCholesky() {
        var result = code
        result.codebooks = solution.map { Float($0) }
        return EvaluatedCode(result, problem: problem)
    }
    return system.solveByConjugateGradient(maxIterations: maxIterations, tolerance: tolerance)
}

/// Per-row scales minimising the objective for fixed codes and codebooks: for each row, with
/// u = Σ_m C_m[codes] unscaled, min_s (w − s u)ᵀH(w − s u) gives s = uᵀHw / uᵀHu.
public func solveScales(_ code: AdditiveCode, problem: LayerProblem) -> AdditiveCode {
    solveScales(EvaluatedCode(code, problem: problem), problem: problem).code
}

/// The same from a known Ŵ·H: uH = (Ŵ H)_r / s_r, so no sgemm is needed (rows with s_r = 0 get one sgemv).
func solveScales(_ evaluated: EvaluatedCode, problem: LayerProblem) -> EvaluatedCode {
    let code = evaluated.code, dIn = problem.dIn
    let unscaled = code.unscaledReconstruction()
    var result = evaluated
    var rowProduct = [Float](repeating: 0, count: dIn)
    unscaled.withUnsafeBufferPointer { u in
        problem.weightTimesHessian.withUnsafeBufferPointer { wh in
            for r in 0..<problem.dOut {
                let row = u.baseAddress! + r * dIn
                let old = code.scales[r]
                if old != 0 {
                    for i in 0..<dIn { rowProduct[i] = result.reconstructionTimesHessian[r * dIn + i] / old }
                } else {
                    problem.hessian.withUnsafeBufferPointer { h in
                        rowProduct.withUnsafeMutableBufferPointer { p in
                            sgemv(h.baseAddress!, rows: dIn, columns: dIn, row, p.baseAddress!)
                        }
                    }
                }
                let curvature = Double(dot(row, rowProduct, count: dIn))
                let projection = Double(dot(row, wh.baseAddress! + r * dIn, count: dIn))
                guard curvature > 0 else { continue }
                let scale = Float(projection / curvature)
                result.code.scales[r] = scale
                for i in 0..<dIn { result.reconstructionTimesHessian[r * dIn + i] = scale * rowProduct[i] }
            }
        }
    }
    result.objective = objective(of: result.code, product: result.reconstructionTimesHessian, problem: problem)
    return result
}

/// A code with Ŵ·H and its objective, carried between steps so that a step needs no fresh sgemm.
struct EvaluatedCode {
    var code: AdditiveCode
    /// Ŵ H [dOut, dIn].
    var reconstructionTimesHessian: [Float]
    /// tr((W−Ŵ)H(W−Ŵ)ᵀ).
    var objective: Double

    init(_ code: AdditiveCode, problem: LayerProblem) {
        self.code = code
        reconstructionTimesHessian = problem.timesHessian(code.dequantized())
        objective = Quantizer.objective(of: code, product: reconstructionTimesHessian, problem: problem)
    }

    init(code: AdditiveCode, reconstructionTimesHessian: [Float], problem: LayerProblem) {
        self.code = code
        self.reconstructionTimesHessian = reconstructionTimesHessian
        objective = Quantizer.objective(of: code, product: reconstructionTimesHessian, problem: problem)
    }
}

/// tr((W−Ŵ)H(W−Ŵ)ᵀ) = Σ (W − Ŵ) ⊙ (W H − Ŵ H), given Ŵ H.
func objective(of code: AdditiveCode, product: [Float], problem: LayerProblem) -> Double {
    var residual = code.dequantized()
    var gradient = problem.weightTimesHessian
    for i in residual.indices {
        residual[i] = problem.weight[i] - residual[i]
        gradient[i] -= product[i]
    }
    return rowwiseDotSum(residual, gradient)
}

/// A c = b for the codebook entries c (flattened [M, 2^B, g]), kept implicit.
struct NormalEquations {
    let code: AdditiveCode
    let problem: LayerProblem
    let unknowns: Int

    init(code: AdditiveCode, problem: LayerProblem) {
        self.code = code
        self.problem = problem
        unknowns = code.codebooks.count
    }

    var choleskyIsCheap: Bool {
        let entriesPerRow = Double(code.groupsPerRow * code.scheme.codebookCount * code.scheme.groupSize)
        let assembly = Double(problem.dOut) * entriesPerRow * entriesPerRow
        let factorisation = Double(unknowns) * Double(unknowns) * Double(unknowns) / 3
        return unknowns <= 4096 && assembly <= 5e7 && factorisation <= 5e9
    }

    /// b = Σ_r s_r L_rᵀ (W H)_r.
    func rightHandSide() -> [Double] {
        scatter(problem.weightTimesHessian)
    }

    /// A·x, and the Ŵ(x)·H it goes through.
    func apply(_ x: [Double]) -> (image: [Double], product: [Float]) {
        var trial = code
        trial.codebooks = x.map { Float($0) }
        let product = problem.timesHessian(trial.dequantized())
        return (scatter(product), product)
    }

    /// out[m, c, a] = Σ over (r, j) with codes[r, j, m] = c of s_r · rows[r, j·g + a].
    func scatter(_ rows: [Float]) -> [Double] {
        let g = code.scheme.groupSize, books = code.scheme.codebookCount, groups = code.groupsPerRow
        let size = code.scheme.codebookSize, dIn = problem.dIn, dOut = problem.dOut
        // A fixed split (not one per worker) keeps the summation order, hence the result, the
        // same on any thread count.
        let parts = max(1, min(8, dOut / 64))
        var partials = [[Double]](repeating: [], count: parts)
        partials.withUnsafeMutableBufferPointer { partials in
            let partials = partials.baseAddress!
            parallelFor(parts) { part in
                var sums = [Double](repeating: 0, count: books * size * g)
                let lo = dOut * part / parts, hi = dOut * (part + 1) / parts
                for r in lo..<hi {
                    let s = Double(code.scales[r])
                    for j in 0..<groups {
                        for m in 0..<books {
                            let base = (m * size + Int(code.codes[(r * groups + j) * books + m])) * g
                            for a in 0..<g { sums[base + a] += s * Double(rows[r * dIn + j * g + a]) }
                        }
                    }
                }
                partials[part] = sums
            }
        }
        var total = partials[0]
        for w in 1..<parts {
            for i in total.indices { total[i] += partials[w][i] }
        }
        return total
    }

    /// Exact solve through the assembled normal equations; nil if LAPACK reports failure.
    func solveByCholesky() -> [Double]? {
        let g = code.scheme.groupSize, books = code.scheme.codebookCount, groups = code.groupsPerRow
        let size = code.scheme.codebookSize, dIn = problem.dIn, n = unknowns
        var matrix = [Double](repeating: 0, count: n * n)
        var rhs = rightHandSide()
        let hessian = problem.hessian
        var bases = [Int](repeating: 0, count: groups * books)
        for r in 0..<problem.dOut {
            let s2 = Double(code.scales[r]) * Double(code.scales[r])
            for j in 0..<groups {
                for m in 0..<books { bases[j * books + m] = (m * size + Int(code.codes[(r * groups + j) * books + m])) * g }
            }
            for p in 0..<(groups * books) {
                let rowBase = bases[p], rowGroup = p / books
                for q in 0..<(groups * books) {
                    let columnBase = bases[q], columnGroup = q / books
                    for a in 0..<g {
                        let hessianRow = (rowGroup * g + a) * dIn + columnGroup * g
                        let matrixRow = (rowBase + a) * n + columnBase
                        for b in 0..<g { matrix[matrixRow + b] += s2 * Double(hessian[hessianRow + b]) }
                    }
                }
            }
        }
        // A tiny ridge keeps the factorisation stable; codes nobody uses (zero rows) keep their value.
        var largest = 0.0
        for i in 0..<n { largest = max(largest, matrix[i * n + i]) }
        let ridge = max(largest, 1) * 1e-10
        for i in 0..<n {
            if matrix[i * n + i] == 0 {
                matrix[i * n + i] = 1
                rhs[i] = Double(code.codebooks[i])
            } else {
                matrix[i * n + i] += ridge
            }
        }
        let info = LAPACKE_dposv(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "U")), Int32(n), 1, &matrix, Int32(n), &rhs, 1)
        return info == 0 ? rhs : nil
    }

    /// Preconditioned conjugate gradient from the current codebooks. Every iterate lowers the
    /// objective (CG minimises the A-norm error over a growing Krylov space); it stops once an
    /// iteration gains less than `tolerance` of the objective. Ŵ is linear in the codebooks, so Ŵ(x)·H
    /// is accumulated from the matvecs' products at no extra sgemm.
    func solveByConjugateGradient(maxIterations: Int, tolerance: Double) -> EvaluatedCode {
        let preconditioner = BlockJacobi(code: code, problem: problem)
        var x = code.codebooks.map { Double($0) }
        let b = rightHandSide()
        var (ax, product) = apply(x)
        var residual = (0..<unknowns).map { b[$0] - ax[$0] }
        // objective(x) = xᵀAx − 2bᵀx + tr(W H Wᵀ)
        let objective = dot(x, ax) - 2 * dot(b, x) + problem.referenceEnergy
        ax = []
        var z = preconditioner.solve(residual)
        var direction = z
        var rz = dot(residual, z)
        for _ in 0..<maxIterations {
            guard rz > 0 else { break }
            let (ad, directionProduct) = apply(direction)
            let curvature = dot(direction, ad)
            guard curvature > 0 else { break }
            let step = rz / curvature
            for i in 0..<unknowns {
                x[i] += step * direction[i]
                residual[i] -= step * ad[i]
            }
            addScaled(directionProduct, Float(step), to: &product)
            if step * rz < tolerance * max(objective, 1e-30) { break }
            z = preconditioner.solve(residual)
            let rzNext = dot(residual, z)
            let beta = rzNext / rz
            rz = rzNext
            for i in 0..<unknowns { direction[i] = z[i] + beta * direction[i] }
        }
        var result = code
        result.codebooks = x.map { Float($0) }
        return EvaluatedCode(code: result, reconstructionTimesHessian: product, problem: problem)
    }
}

/// y += a·x.
private func addScaled(_ x: [Float], _ a: Float, to y: inout [Float]) {
    cblas_saxpy(Int32(x.count), a, x, 1, &y, 1)
}

/// The g×g diagonal blocks of A, one per codebook vector: D_{m,c} = Σ_{(r,j): codes[r,j,m]=c} s_r² H_jj,
/// Cholesky-factored. Unused vectors get the identity.
struct BlockJacobi {
    let g: Int
    let vectors: Int
    /// Lower Cholesky factors, [vectors, g, g].
    var factors: [Double]

    init(code: AdditiveCode, problem: LayerProblem) {
        let g = code.scheme.groupSize, books = code.scheme.codebookCount, groups = code.groupsPerRow
        let size = code.scheme.codebookSize, dIn = problem.dIn
        self.g = g
        vectors = books * size
        var blocks = [Double](repeating: 0, count: vectors * g * g)
        for r in 0..<problem.dOut {
            let s2 = Double(code.scales[r]) * Double(code.scales[r])
            for j in 0..<groups {
                for m in 0..<books {
                    let base = (m * size + Int(code.codes[(r * groups + j) * books + m])) * g * g
                    for a in 0..<g {
                        for b in 0..<g { blocks[base + a * g + b] += s2 * Double(problem.hessian[(j * g + a) * dIn + j * g + b]) }
                    }
                }
            }
        }
        for v in 0..<vectors { factorBlock(&blocks, at: v * g * g, g: g) }
        factors = blocks
    }

    /// z = D⁻¹ r block by block (forward then backward substitution with L Lᵀ).
    func solve(_ r: [Double]) -> [Double] {
        var z = r
        for v in 0..<vectors {
            let f = v * g * g, o = v * g
            for a in 0..<g {
                var t = z[o + a]
                for b in 0..<a { t -= factors[f + a * g + b] * z[o + b] }
                z[o + a] = t / factors[f + a * g + a]
            }
            for a in stride(from: g - 1, through: 0, by: -1) {
                var t = z[o + a]
                for b in (a + 1)..<g { t -= factors[f + b * g + a] * z[o + b] }
                z[o + a] = t / factors[f + a * g + a]
            }
        }
        return z
    }
}

/// In-place lower Cholesky factor of the g×g block at `offset`, with a small ridge; the identity
/// if the block is zero or not positive definite.
private func factorBlock(_ blocks: inout [Double], at offset: Int, g: Int) {
    var trace = 0.0
    for a in 0..<g { trace += blocks[offset + a * g + a] }
    func setIdentity() {
        for a in 0..<g { for b in 0..<g { blocks[offset + a * g + b] = a == b ? 1 : 0 } }
    }
    guard trace > 0 else { return setIdentity() }
    let ridge = 1e-8 * trace / Double(g)
    for a in 0..<g { blocks[offset + a * g + a] += ridge }
    for a in 0..<g {
        for b in 0...a {
            var sum = blocks[offset + a * g + b]
            for k in 0..<b { sum -= blocks[offset + a * g + k] * blocks[offset + b * g + k] }
            if a == b {
                guard sum > 0 else { return setIdentity() }
                blocks[offset + a * g + a] = sum.squareRoot()
            } else {
                blocks[offset + a * g + b] = sum / blocks[offset + b * g + b]
            }
        }
    }
}

private func dot(_ x: [Double], _ y: [Double]) -> Double {
    var total = 0.0
    for i in x.indices { total += x[i] * y[i] }
    return total
}
