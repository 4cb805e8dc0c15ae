/// A sweep refused or failed: one line naming the bad argument, file or scheme.
public struct SweepError: Error, CustomStringConvertible, Equatable, Sendable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
