import ArgumentParser

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "perplexity", abstract: "(not implemented yet)")
    func run() throws { throw ValidationError("aqlm perplexity: not implemented yet") }
}
