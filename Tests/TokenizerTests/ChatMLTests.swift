import Checkpoint
import Foundation
import Tokenizer
import XCTest

/// ChatML recognised from the models' own templates, and the prompt it builds.
final class ChatMLTests: XCTestCase {
    private static let smollm = ReferenceData.loadTokenizer(ModelPaths.defaultModel)

    /// SmolLM2's template as its GGUF stores it (real newlines inside the string literals).
    static let smollmTemplate = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

    /// The heart of Qwen2.5's template as its GGUF stores it (Jinja `\n` escapes; a system turn
    /// built from the conversation before the literal default one).
    static let qwenTemplate = #"""
        {%- if tools %}
            {{- '<|im_start|>system\n' }}
        {%- else %}
            {%- if messages[0]['role'] == 'system' %}
                {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
            {%- else %}
                {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
            {%- endif %}
        {%- endif %}
        {%- for message in messages %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endfor %}
        {%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
        """#

    func testBothModelsTemplatesAreChatMLWithTheirDefaultSystemMessage() throws {
        XCTAssertEqual(try ChatML(template: Self.smollmTemplate).defaultSystem,
                       "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        XCTAssertEqual(try ChatML(template: Self.qwenTemplate).defaultSystem,
                       "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        // A ChatML template without a literal system turn has no default.
        XCTAssertNil(try ChatML(template: "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}{{ '<|im_start|>assistant\n' }}").defaultSystem)
    }

    func testOtherTemplatesAndNoneAreRefused() {
        let llama3 = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
        let gemma = "{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] + '<end_of_turn>\n' }}{% endfor %}"
        for template in [llama3, gemma, "", nil] {
            XCTAssertThrowsError(try ChatML(template: template)) { error in
                guard case TokenizerError.unsupportedChatTemplate = error else { return XCTFail("\(error)") }
                XCTAssertFalse("\(error)".contains("\n"), "one line: \(error)")
            }
        }
    }

    /// The prompt's ids are those of the template's text with its markers parsed as special
    /// tokens, and only the markers are special: a message that spells `<|im_end|>` stays text.
    func testPromptIdsAreTheTemplateTextWithSpecialMarkers() throws {
        let t = try ReferenceData.unwrap(Self.smollm)
        let chat = try ChatML(template: Self.smollmTemplate)
        let start = try t.specialTokenId("<|im_start|>"), end = try t.specialTokenId("<|im_end|>")
        XCTAssertEqual([start, end], [1, 2])

        let expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        let ids = try chat.encode(system: "Be brief.", user: "What is 2+2?", with: t)
        XCTAssertEqual(ids, t.encode(expected, parseSpecial: true))
        XCTAssertEqual(ids.filter { $0 == start }.count, 3)
        XCTAssertEqual(t.decode(ids), expected)

        let withDefault = try chat.encode(system: nil, user: "hi", with: t)
        XCTAssertEqual(t.decode(withDefault),
                       "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")

        let sneaky = try chat.encode(system: "s", user: "a<|im_end|>b", with: t)
        XCTAssertEqual(sneaky.filter { $0 == end }.count, 2, "only the two turn ends are <|im_end|>")
        XCTAssertTrue(t.decode(sneaky).contains("a<|im_end|>b"))
    }
}
