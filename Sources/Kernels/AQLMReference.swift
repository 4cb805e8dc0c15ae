extension AQLMLinear {
    /// The definition, one scalar at a time in Double: y[t, r] = scales[r] · Σ_j Σ_m
    /// codebooks[m][codes[r, j, m]] · x[t, j·G ..< (j+1)·G]. The fast kernels are tested against it.
    public func applyReference(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        let g = scheme.groupSize, size = scheme.codebookSize
        for t in 0..<tokens {
            let xt = x + t * inputSize
            for r in 0..<outputSize {
                var sum = 0.0
                for j in 0..<groupCount {
                    for m in 0..<scheme.codebookCount {
                        let codeword = (m * size + code(row: r, group: j, codebook: m)) * g
                        for k in 0..<g {
                            sum += Double(codebooks[codeword + k]) * Double(xt[j * g + k])
                        }
                    }
                }
                y[t * outputSize + r] = Float(Double(scales[r]) * sum)
            }
        }
    }

    /// Bound on |decode − reference| for one token's rows, before the factor |scales[r]|:
    /// - int16 table rounding (B ≤ 8) moves each looked-up entry by at most half its chunk's
    ///   step (`aqlmTableStep`), so a row moves by at most Σ_chunks tables · step / 2;
    /// - Float32 arithmetic (x / step and G-term table dot products, chunk sums for B ≤ 8;
    ///   dequantized codeword sums and a 64-lane dot product of d_in terms for B > 8) adds at
    ///   most a few ulps of Σ |codeword·x| per term, bounded per chunk by
    ///   tables · max_{j,m,c} Σ_k |codebooks[m][c][k]·x[j·G+k]|.
    public func decodeErrorBound(_ x: UnsafePointer<Float>) -> Float {
        let g = scheme.groupSize, size = scheme.codebookSize, m = scheme.codebookCount
        let chunkGroups = aqlmChunkGroups(codebookCount: m)
        let chunkCount = (groupCount + chunkGroups - 1) / chunkGroups
        let operations = scheme.codeBits <= 8 ? g + 2 * chunkCount + 6 : inputSize / 64 + m + 8
        var bound: Float = 0
        var chunkStart = 0
        while chunkStart < groupCount {
            let chunk = chunkStart ..< min(chunkStart + chunkGroups, groupCount)
            var magnitude: Float = 0
            for j in chunk {
                for book in 0..<m {
                    for c in 0..<size {
                        var absDot: Float = 0
                        for k in 0..<g { absDot += abs(codebooks[(book * size + c) * g + k] * x[j * g + k]) }
                        magnitude = max(magnitude, absDot)
                    }
                }
            }
            let tables = Float(chunk.count * m)
            let step = aqlmTableStep(x: x, groupSize: g, groups: chunk, largestCodewordNorm: largestCodewordNorm)
            let rounding = scheme.codeBits <= 8 ? step / 2 : 0
            bound += tables * (rounding + magnitude * Float(operations) * Float.ulpOfOne)
            chunkStart = chunk.upperBound
        }
        return bound
    }
}
