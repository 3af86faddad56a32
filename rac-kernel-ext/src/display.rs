//! What a cell shows. Any value whose type implements [`NotebookDisplay`] renders when it is
//! a cell's last expression: evcxr calls `value.evcxr_display()`, which prints the value's
//! MIME bundle between evcxr's content markers.

use polars::prelude::DataFrame;
use rac_core::eval::{format_value, text_table};
use rac_core::experiment::RunRecord;

/// A MIME bundle: one display, several representations (the viewer picks the richest).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bundle(pub Vec<(&'static str, String)>);

impl Bundle {
    /// An empty bundle.
    pub fn new() -> Self {
        Bundle(Vec::new())
    }
    /// Add a representation.
    pub fn with(mut self, mime: &'static str, content: String) -> Self {
        self.0.push((mime, content));
        self
    }
    /// The content of one MIME type.
    pub fn get(&self, mime: &str) -> Option<&str> {
        self.0.iter().find(|(m, _)| *m == mime).map(|(_, c)| c.as_str())
    }
    /// The bundle in evcxr's wire format.
    pub fn to_evcxr(&self) -> String {
        let mut out = String::new();
        for (mime, content) in &self.0 {
            // A content line equal to the end marker would end the block early.
            let content = content.replace("\nEVCXR_END_CONTENT", "\n EVCXR_END_CONTENT");
            out.push_str(&format!("EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT\n"));
        }
        out
    }
}

/// A value a notebook cell can show.
pub trait NotebookDisplay {
    /// Its representations.
    fn mime_bundle(&self) -> Bundle;
    /// Called by evcxr on a cell's last expression.
    fn evcxr_display(&self) {
        print!("{}", self.mime_bundle().to_evcxr());
    }
}

/// Escape text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Row and column limits of the HTML table of a DataFrame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLimits {
    /// At most this many rows: the first and last halves, with an ellipsis row between.
    pub max_rows: usize,
    /// At most this many columns: the first and last halves, with an ellipsis column.
    pub max_cols: usize,
}

impl Default for TableLimits {
    fn default() -> Self {
        TableLimits { max_rows: 30, max_cols: 16 }
    }
}

/// Which of `n` positions are shown under a limit of `max`, with `None` marking the gap.
fn shown(n: usize, max: usize) -> Vec<Option<usize>> {
    if n <= max {
        return (0..n).map(Some).collect();
    }
    let head = max.div_ceil(2);
    let tail = max - head;
    (0..head).map(Some).chain(std::iter::once(None)).chain((n - tail..n).map(Some)).collect()
}

/// The HTML table of a DataFrame: header row with column names and types, right-aligned
/// numbers, and the frame's shape below.
pub fn html_table(df: &DataFrame, limits: TableLimits) -> String {
    let cols = df.columns();
    let col_idx = shown(cols.len(), limits.max_cols);
    let row_idx = shown(df.height(), limits.max_rows);
    let mut h = String::from("<div class=\"rac-table\"><table class=\"dataframe\" border=\"1\">\n<thead><tr>");
    for c in &col_idx {
        match c {
            Some(c) => h.push_str(&format!(
                "<th style=\"text-align:right\">{}<br><small>{}</small></th>",
                escape(cols[*c].name()),
                escape(&cols[*c].dtype().to_string())
            )),
            None => h.push_str("<th>…</th>"),
        }
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for r in &row_idx {
        h.push_str("<tr>");
        for c in &col_idx {
            let cell = match (r, c) {
                (Some(r), Some(c)) => cols[*c].get(*r).map(|v| format_value(&v)).unwrap_or_default(),
                _ => "…".into(),
            };
            let numeric = c.is_some_and(|c| cols[c].dtype().is_primitive_numeric());
            let align = if numeric { "right" } else { "left" };
            h.push_str(&format!("<td style=\"text-align:{align}\">{}</td>", escape(&cell)));
        }
        h.push_str("</tr>\n");
    }
    h.push_str(&format!("</tbody></table><p><small>{} rows × {} columns</small></p></div>", df.height(), cols.len()));
    h
}

impl NotebookDisplay for DataFrame {
    fn mime_bundle(&self) -> Bundle {
        Bundle::new().with("text/html", html_table(self, TableLimits::default())).with("text/plain", text_table(self))
    }
}

fn record_html(r: &RunRecord) -> String {
    let m = &r.meta;
    let last = r.epochs.height().checked_sub(1);
    let loss = last.and_then(|i| r.epochs.column("loss").ok()?.get(i).ok().map(|v| format_value(&v))).unwrap_or_default();
    format!(
        "<div class=\"rac-run\"><p><b>run {}</b> · config {} · seed {} · {} epochs (last loss {}) · <code>{}</code></p>{}</div>",
        escape(&m.name),
        escape(&m.config_hash),
        m.seed,
        r.epochs.height(),
        escape(&loss),
        escape(&r.dir.display().to_string()),
        html_table(&r.metrics, TableLimits::default())
    )
}

impl NotebookDisplay for RunRecord {
    fn mime_bundle(&self) -> Bundle {
        let text = format!("run {} ({}), seed {}\n{}", self.meta.name, self.meta.config_hash, self.meta.seed, text_table(&self.metrics));
        Bundle::new().with("text/html", record_html(self)).with("text/plain", text)
    }
}

/// The result of a sweep: its records and its table.
impl NotebookDisplay for (Vec<RunRecord>, DataFrame) {
    fn mime_bundle(&self) -> Bundle {
        let (records, table) = self;
        let html = format!("<p><b>sweep of {} runs</b></p>{}", records.len(), html_table(table, TableLimits { max_rows: 60, ..Default::default() }));
        Bundle::new().with("text/html", html).with("text/plain", format!("sweep of {} runs\n{}", records.len(), text_table(table)))
    }
}

impl NotebookDisplay for Vec<RunRecord> {
    fn mime_bundle(&self) -> Bundle {
        let html: String = self.iter().map(record_html).collect();
        let text: Vec<String> = self.iter().map(|r| format!("{} ({})", r.meta.name, r.meta.config_hash)).collect();
        Bundle::new().with("text/html", html).with("text/plain", text.join("\n"))
    }
}
