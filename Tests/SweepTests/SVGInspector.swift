import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// Parses an SVG with Foundation's XML parser and collects what the tests check: whether it
/// is well-formed, each `<g class="point">` with its family and label text, and axis tick labels.
final class SVGInspector: NSObject, XMLParserDelegate {
    struct Point: Equatable {
        var scheme: String
        var family: String
        var label = ""
        var hasMarker = false
    }

    private(set) var points: [Point] = []
    private(set) var axisTexts: [String] = []
    private(set) var wellFormed = false
    private(set) var rootElement = ""
    private(set) var error = ""
    private var stack: [(name: String, classes: String)] = []
    private var text = ""

    init(svg: String) {
        super.init()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = self
        wellFormed = parser.parse()
        if !wellFormed { error = parser.parserError.map { "\($0)" } ?? "unknown" }
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        if rootElement.isEmpty { rootElement = name }
        let classes = attributes["class"] ?? ""
        if name == "g" && classes == "point" {
            points.append(Point(scheme: attributes["data-scheme"] ?? "", family: attributes["data-family"] ?? ""))
        }
        if classes == "marker", stack.contains(where: { $0.classes == "point" }) { points[points.count - 1].hasMarker = true }
        stack.append((name, classes))
        text = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        let element = stack.removeLast()
        if element.name == "text" && element.classes == "label" { points[points.count - 1].label = text }
        if element.name == "text" && stack.contains(where: { $0.classes == "axes" }) { axisTexts.append(text) }
        text = ""
    }
}
