import Kernels

/// The best single-code change of one (row, group) under a linearised loss, and its predicted
/// loss change (negative: a predicted gain).
public struct CodeProposal: Sendable, Equatable {
    public let row: Int
    public let group: Int
    public let codebook: Int
    public let code: UInt16
    public let predictedChange: Float
}

/// PV-tuning's linearised V step, scored per group: for every (row r, group j) and every
/// single-codebook change C_m[o] → C_m[c] (δ = s_r(C_m[c] − C_m[o]) on ŵ_rj), the model
///   Δloss ≈ G_rj·δ + (L/2)·δᵀ H_jj δ
/// (first-order term from the loss gradient G = ∂L/∂Ŵ, plus a proximity term with trust constant
/// L under the g×g diagonal block of `hessian`: the local version of PV-tuning's nearest point to
/// Ŵ − G/L). Returns, per (row, group), the change with the lowest model value when it is
/// negative: only changes whose first-order term is negative qualify, since the proximity term
/// is never negative. Scored like the beam search:
///   s G·C_c + (L s²/2)(q_c − 2 C_c·H_jj C_o) − s G·C_o + (L s²/2) q_o,  q_c = C_c H_jj C_cᵀ.
/// Cross-group terms are left out: the caller applies few, scattered changes.
public func linearizedCodeProposals(_ code: AdditiveCode, gradient: [Float], hessian: [Float], trust: Float) -> [CodeProposal] {
    precondition(gradient.count == code.dOut * code.dIn && hessian.count == code.dIn * code.dIn)
    let tables = BeamSearchTables(code: code, hessian: hessian)
    let g = code.scheme.groupSize, books = code.scheme.codebookCount, size = code.scheme.codebookSize
    let groups = code.groupsPerRow, dIn = code.dIn, vectors = books * size
    var best = [CodeProposal?](repeating: nil, count: code.dOut * groups)
    best.withUnsafeMutableBufferPointer { best in
        tables.withPointers { t in
            let best = best.baseAddress!, codebooks = t.codebooks, transposed = t.transposed, energies = t.energies, blocks = t.blocks
            parallelRowBlocks(code.dOut) { rows in
                var query = [Float](repeating: 0, count: g)
                for r in rows {
                    let s = code.scales[r], curvature = trust * s * s
                    for j in 0..<groups {
                        let block = blocks + j * g * g
                        let gradientSlice = r * dIn + j * g
                        for m in 0..<books {
                            let old = Int(code.codes[(r * groups + j) * books + m])
                            let oldVector = codebooks + (m * size + old) * g
                            var gradientDotOld: Float = 0
                            for a in 0..<g {
                                var row: Float = 0
                                for b in 0..<g { row += block[a * g + b] * oldVector[b] }
                                query[a] = s * gradient[gradientSlice + a] - curvature * row
                                gradientDotOld += gradient[gradientSlice + a] * oldVector[a]
                            }
                            let bias = energies + j * vectors + m * size
                            let offset = -s * gradientDotOld + curvature / 2 * bias[old]
                            let found = nearestCandidate(query: query, dims: g, table: transposed + m * g * size, count: size,
                                                         bias: bias, biasScale: curvature / 2, offset: offset)
                            guard found.index != old, found.value < 0 else { continue }
                            if let current = best[r * groups + j], current.predictedChange <= found.value { continue }
                            best[r * groups + j] = CodeProposal(row: r, group: j, codebook: m, code: UInt16(found.index),
                                                                predictedChange: found.value)
                        }
                    }
                }
            }
        }
    }
    return best.compactMap { $0 }
}
