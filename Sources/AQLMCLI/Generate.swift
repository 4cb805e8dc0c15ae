import ArgumentParser

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "(not implemented yet)")
    func run() throws { throw ValidationError("aqlm generate: not implemented yet") }
}
