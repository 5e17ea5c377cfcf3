//! The live view's page: one HTML document holding its script, its style and the vendored
//! uPlot (cli/assets/uplot, MIT), so the browser fetches nothing but the view's JSON from the
//! server that served it. The page builds its DOM with `textContent`, so no member-supplied
//! text is ever parsed as HTML.

const TEMPLATE: &str = include_str!("../../assets/ui/ui.html");
const SCRIPT: &str = include_str!("../../assets/ui/ui.js");
const STYLE: &str = include_str!("../../assets/ui/ui.css");
const UPLOT_JS: &str = include_str!("../../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/uplot/uPlot.min.css");

/// The whole page (a few tens of kilobytes, built once at start).
pub fn html() -> String {
    TEMPLATE
        .replace("/*UPLOT_CSS*/", UPLOT_CSS)
        .replace("/*STYLE*/", STYLE)
        .replace("/*UPLOT_JS*/", UPLOT_JS)
        .replace("/*SCRIPT*/", SCRIPT)
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
}
