import ArgumentParser

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "(not implemented yet)")
    func run() throws { throw ValidationError("aqlm inspect: not implemented yet") }
}
