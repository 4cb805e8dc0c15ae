import Foundation
import XCTest

/// `--help` of every subcommand exits 0 and documents every option it accepts.
final class CLIHelpTests: CLITestCase {
    /// Options each command must keep (the interface the README and the demo rely on); any
    /// other subcommand gets the generic checks.
    let required: [String: [String]] = [
        "inspect": ["--model", "--json"],
        "tokenize": ["--model", "--text", "--count", "--json", "--parse-special"],
        "perplexity": ["--model", "--text", "--ids", "--ctx", "--chunks", "--protocol", "--save-logits", "--kl-base", "--json"],
        "generate": ["--model", "--prompt", "-n", "--temp", "--top-p", "--seed", "--json"],
        "quantize": ["--model", "--out", "--scheme", "--preset", "--calibration", "--samples", "--seqlen", "--seed", "--json"],
        "sweep": ["--model", "--schemes", "--out", "--text", "--json"],
    ]

    func testEveryOptionOfEverySubcommandIsInItsHelp() throws {
        // ArgumentParser's own description of the tool: every argument each subcommand parses.
        let dump = try jsonObject(try succeed(["--experimental-dump-help"]).replacingOccurrences(of: "\n", with: " "))
        let root = try XCTUnwrap(dump["command"] as? [String: Any])
        let subcommands = try XCTUnwrap(root["subcommands"] as? [[String: Any]]).filter { $0["commandName"] as? String != "help" }
        let names = Set(subcommands.compactMap { $0["commandName"] as? String })
        XCTAssertTrue(names.isSuperset(of: required.keys), "subcommands \(names.sorted())")

        for sub in subcommands {
            let name = try XCTUnwrap(sub["commandName"] as? String)
            let help = try succeed([name, "--help"])
            XCTAssertEqual(try succeed(["help", name]), help, "aqlm help \(name) is aqlm \(name) --help")
            XCTAssertTrue(help.contains("USAGE: aqlm \(name)"), help)
            for option in required[name] ?? [] {
                XCTAssertTrue(help.contains(option), "aqlm \(name) --help does not mention \(option)")
            }
            for argument in sub["arguments"] as? [[String: Any]] ?? [] where argument["shouldDisplay"] as? Bool == true {
                let spellings = (argument["names"] as? [[String: Any]] ?? []).map { n -> String in
                    let kind = n["kind"] as? String, text = n["name"] as? String ?? "?"
                    return kind == "short" ? "-" + text : kind == "longWithSingleDash" ? "-" + text : "--" + text
                }
                let shown = spellings.first ?? "<\(argument["valueName"] as? String ?? "?")>"
                XCTAssertTrue(spellings.isEmpty ? help.contains(shown) : spellings.contains { help.contains($0) },
                              "aqlm \(name) --help does not mention \(shown)")
                let abstract = argument["abstract"] as? String ?? ""
                XCTAssertFalse(abstract.isEmpty, "aqlm \(name): \(shown) has no help text")
            }
        }
    }

    func testRootHelpListsEverySubcommand() throws {
        let help = try succeed(["--help"])
        for name in required.keys { XCTAssertTrue(help.contains(name), "aqlm --help does not list \(name)") }
    }
}
