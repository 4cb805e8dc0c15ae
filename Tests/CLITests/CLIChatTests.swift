import Foundation
import XCTest
import Checkpoint

/// `generate --chat` needs a ChatML template; `--system` needs `--chat`.
final class CLIChatTests: CLITestCase {
    func testChatWithoutAChatMLTemplateIsRefused() throws {
        let none = try tinyGGUF("no-template.gguf")
        try assertOneLineError(["generate", "--model", none, "--chat", "--prompt", "hi"], mentions: [none, "ChatML", "no chat template"])
        let llama3 = try tinyGGUF("llama3-template.gguf") {
            $0.tokenizer.chatTemplate = "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}{% endfor %}"
        }
        try assertOneLineError(["generate", "--model", llama3, "--chat", "--prompt", "hi"], mentions: [llama3, "not ChatML"])
        try assertOneLineError(["generate", "--model", none, "--system", "be brief", "--prompt", "hi"], mentions: ["--system", "--chat"])
        // A ChatML template over a vocabulary without the marker tokens (the tiny model has none).
        let markerless = try tinyGGUF("markerless.gguf") {
            $0.tokenizer.chatTemplate = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}{{ '<|im_start|>assistant\\n' }}"
        }
        try assertOneLineError(["generate", "--model", markerless, "--chat", "--prompt", "hi"], mentions: [markerless, "<|im_start|>"])
    }

    /// The default model as a chat assistant: the reply to a ChatML-wrapped question ends with
    /// the model's own `<|im_end|>` (stop reason "eos") well before -n, and is an answer, not
    /// the template echoed back.
    func testChatReplyStopsAtTheEndOfTurn() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: ModelPaths.defaultModel), "run tools/setup.sh first")
        let out = try succeed(["generate", "--model", "smollm2-135m", "--chat", "--system", "You answer in one short sentence.",
                               "--prompt", "What is the capital of France?", "-n", "60", "--temp", "0", "--json"], timeout: 120)
        let json = try jsonObject(out)
        XCTAssertEqual(json["stop_reason"] as? String, "eos")
        XCTAssertGreaterThan(json["prompt_tokens"] as? Int ?? 0, 20, "system and user turns")
        let text = try XCTUnwrap(json["text"] as? String)
        XCTAssertLessThan((json["ids"] as? [Int])?.count ?? 60, 60)
        XCTAssertTrue(text.contains("Paris"), text)
        XCTAssertFalse(text.contains("<|im_"), text)
    }
}
