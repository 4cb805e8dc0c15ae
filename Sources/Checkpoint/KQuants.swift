/// Q5_0, Q5_1 and the K-quants (Q2_K ... Q6_K). Placeholder until implemented: callers only
/// reach here for types whose `canDequantize` is true, so this traps on a programming error.
func dequantizeKQuants(_ type: GGMLType, _ src: UnsafeRawPointer, nBlocks: Int, _ dst: UnsafeMutablePointer<Float>) {
    preconditionFailure("dequantize: \(type.name) not implemented yet")
}
