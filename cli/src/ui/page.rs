//! The live view's page: one HTML document holding its script, its style and the vendored
//! uPlot (cli/assets/uplot, MIT), so the browser fetches nothing but the view's JSON from the
//! server that served it. The page builds its DOM with `textContent`, so no member-supplied
//! text is ever parsed as HTML.

const TEMPLATE: &str = include_str!("../../assets/ui/ui.html");
const SCRIPT: &str = include_str!("../../assets/ui/ui.js");
const STYLE: &str = include_str!("../../assets/ui/ui.css");
const UPLOT_JS: &str = include_str!("../../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/uplot/uPlot.min.css");
const LAMPORT: &str = include_str!("../../assets/ui/lamport.js");
const TRACE_TEMPLATE: &str = include_str!("../../assets/ui/trace.html");

/// The whole page (a few tens of kilobytes, built once at start).
pub fn html() -> String {
    TEMPLATE
        .replace("/*UPLOT_CSS*/", UPLOT_CSS)
        .replace("/*STYLE*/", STYLE)
        .replace("/*UPLOT_JS*/", UPLOT_JS)
        .replace("/*LAMPORT*/", LAMPORT)
        .replace("/*SCRIPT*/", SCRIPT)
}

/// `caplab trace`'s page: the diagram's data (`diagram`, JSON) inside the page with its
/// drawing script. The data sits in a `<script type="application/json">` element, so every
/// `<`, `>` and `&` in it is written as a JSON `\u` escape: no text in it can close the
/// element or be read as markup.
pub fn trace_html(diagram: &str) -> String {
    let data = diagram
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    TRACE_TEMPLATE
        .replace("/*STYLE*/", STYLE)
        .replace("/*LAMPORT*/", LAMPORT)
        .replace("/*DATA*/", &data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_is_self_contained() {
        let page = super::html();
        assert!(!page.contains("/*SCRIPT*/") && page.contains("uPlot"));
        for needle in ["src=\"http", "href=\"http", "@import"] {
            assert!(!page.contains(needle), "the page references {needle}");
        }
    }

    #[test]
    fn trace_data_cannot_close_its_script_element() {
        let page = super::trace_html(r#"{"unread": ["</script><b>x</b>"]}"#);
        assert!(!page.contains("</script><b>") && page.contains("\\u003c/script"));
    }
}
