import ArgumentParser

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenize", abstract: "(not implemented yet)")
    func run() throws { throw ValidationError("aqlm tokenize: not implemented yet") }
}
