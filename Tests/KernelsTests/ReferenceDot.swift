/// Σ_i w[row·width + i] · x[offset + i] in Double, and Σ |w·x| (the scale of its rounding
/// error): the reference the Float32 kernels' row dot products are checked against.
func referenceDot(_ w: [Float], row: Int, width: Int, _ x: [Float], offset: Int = 0) -> (value: Double, magnitude: Double) {
    var value = 0.0, magnitude = 0.0
    for i in 0..<width {
        let product = Double(w[row * width + i]) * Double(x[offset + i])
        value += product
        magnitude += abs(product)
    }
    return (value, magnitude)
}
