//! Images in cells: a labelled grid of data-set images, and the retrieval panel of the
//! paper's appendix C (a query, its neighbours' labels by distance, label counts, a
//! histogram of distances, the true label).

use base64::Engine;
use image::DynamicImage;
use rac_core::data::{Dataset, Split, SplitKind};
use rac_core::experiment::Prepared;
use rac_core::index::{Queries, SearchRequest};
use rac_core::{Error, Result};

use crate::display::{Bundle, NotebookDisplay, escape};
use crate::figure::{Chart, SeriesKind};

/// An image as an inline `<img>` (PNG, base64), scaled to `px` pixels wide.
pub fn img_tag(img: &DynamicImage, px: u32, alt: &str) -> Result<String> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::Internal(format!("cannot encode image `{alt}` as PNG: {e}")))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    Ok(format!("<img src=\"data:image/png;base64,{b64}\" width=\"{px}\" alt=\"{}\" style=\"image-rendering:pixelated\">", escape(alt)))
}

/// A grid of labelled images.
#[derive(Debug, Clone)]
pub struct ImageGrid {
    /// `(img tag, caption)` per cell.
    pub cells: Vec<(String, String)>,
    /// Cells per row.
    pub columns: usize,
}

fn split_of(dataset: &Dataset, kind: SplitKind) -> Result<&Split> {
    dataset.split(kind).ok_or_else(|| Error::MissingSplit { dataset: dataset.name().to_string(), split: kind.name().to_string(), hint: None })
}

/// Images `items` of a split, captioned with their class texts, `columns` per row.
pub fn image_grid(dataset: &Dataset, kind: SplitKind, items: &[usize], columns: usize) -> Result<ImageGrid> {
    let split = split_of(dataset, kind)?;
    let cells = items
        .iter()
        .map(|&i| {
            let img = split.image(i)?;
            let caption = format!("{} #{i}: {}", kind.name(), dataset.class_texts[split.labels[i]]);
            Ok((img_tag(&img, 84, &caption)?, caption))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ImageGrid { cells, columns: columns.max(1) })
}

/// The first `per_class` images of each class of a split: a look at every class.
pub fn class_samples(dataset: &Dataset, kind: SplitKind, per_class: usize) -> Result<ImageGrid> {
    let split = split_of(dataset, kind)?;
    let mut items = Vec::new();
    for c in 0..dataset.num_classes() {
        items.extend(split.labels.iter().enumerate().filter(|&(_, &l)| l == c).map(|(i, _)| i).take(per_class));
    }
    image_grid(dataset, kind, &items, per_class.max(1) * 2)
}

impl NotebookDisplay for ImageGrid {
    fn mime_bundle(&self) -> Bundle {
        let mut h = String::from("<table class=\"rac-grid\">");
        for row in self.cells.chunks(self.columns) {
            h.push_str("<tr>");
            for (img, caption) in row {
                h.push_str(&format!("<td style=\"text-align:center\">{img}<br><small>{}</small></td>", escape(caption)));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
        let text: Vec<&str> = self.cells.iter().map(|(_, c)| c.as_str()).collect();
        Bundle::new().with("text/html", h).with("text/plain", text.join("\n"))
    }
}

/// One retrieved neighbour in a [`RetrievalPanel`].
#[derive(Debug, Clone)]
pub struct Retrieved {
    /// Its rank (1 = nearest).
    pub rank: usize,
    /// Its text.
    pub text: String,
    /// Its label id.
    pub label: u32,
    /// Its distance to the query.
    pub distance: f32,
    /// Its image, when the index item maps back to a training image.
    pub image: Option<String>,
}

/// The retrieval panel of one query (the paper's appendix C).
#[derive(Debug, Clone)]
pub struct RetrievalPanel {
    /// The query's position in the evaluation split.
    pub query: usize,
    /// The query image.
    pub image: String,
    /// The query's true class text.
    pub true_text: String,
    /// Its true label id.
    pub true_label: u32,
    /// The neighbours in distance order.
    pub neighbours: Vec<Retrieved>,
    /// `(text, count)` of the retrieved labels, most frequent first.
    pub counts: Vec<(String, usize)>,
    /// The histogram of distances.
    pub histogram: Chart,
}

/// Find the row of item id `id` in a split.
fn row_of(split: &Split, id: &str) -> Option<usize> {
    (0..split.len()).find(|&i| split.item_id(i) == id)
}

/// The panel of evaluation item `query` (a test image, or a held-out validation image)
/// against the prepared index, with `k` neighbours.
pub fn retrieval_panel(prep: &Prepared, query: usize, k: usize) -> Result<RetrievalPanel> {
    let n = prep.eval.ids.len();
    if query >= n {
        return Err(Error::OutOfRange { what: format!("retrieval_panel: query of the {} split", prep.eval_split), index: query, len: n });
    }
    let ds = &prep.dataset;
    let eval_split = ds.split(prep.eval_split.source()).ok_or_else(|| Error::MissingSplit {
        dataset: ds.name().to_string(),
        split: prep.eval_split.to_string(),
        hint: None,
    })?;
    let row = row_of(eval_split, &prep.eval.ids[query])
        .ok_or_else(|| Error::Internal(format!("retrieval_panel: item {} of the prepared features is not in the data set", prep.eval.ids[query])))?;
    let true_label = prep.eval.labels[query] as u32;
    let true_text = ds.class_texts[true_label as usize].clone();
    let image = img_tag(&eval_split.image(row)?, 112, &format!("query: {true_text}"))?;
    let vector: Vec<f32> = prep.eval.vectors.get(query)?.to_vec1()?;
    let hits = prep.index.neighbours(&Queries::vectors(&vector, vector.len()), &SearchRequest::top(k)?)?.remove(0);
    let items = prep.index.items(&hits.ids)?;
    let mut neighbours = Vec::with_capacity(hits.ids.len());
    for (i, item) in items.iter().enumerate() {
        let img = match row_of(&ds.train, &item.key) {
            Some(r) if item.source == "train" => Some(img_tag(&ds.train.image(r)?, 42, &item.text)?),
            _ => None,
        };
        neighbours.push(Retrieved { rank: i + 1, text: hits.texts[i].clone(), label: hits.labels[i], distance: hits.distances[i], image: img });
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in &neighbours {
        match counts.iter_mut().find(|(t, _)| *t == r.text) {
            Some((_, c)) => *c += 1,
            None => counts.push((r.text.clone(), 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(RetrievalPanel { query, image, true_text, true_label, histogram: distance_histogram(&neighbours, 8), neighbours, counts })
}

fn distance_histogram(neighbours: &[Retrieved], bins: usize) -> Chart {
    let d: Vec<f64> = neighbours.iter().map(|r| r.distance as f64).collect();
    let (lo, hi) = d.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let width = if hi > lo { (hi - lo) / bins as f64 } else { 1.0 };
    let mut counts = vec![0f64; bins];
    for x in &d {
        counts[(((x - lo) / width) as usize).min(bins - 1)] += 1.0;
    }
    let mut chart = Chart::new("distances of the neighbours", "distance", "neighbours");
    chart.categories = (0..bins).map(|b| format!("{:.3}", lo + (b as f64 + 0.5) * width)).collect();
    chart.with_series("neighbours", (0..bins).map(|b| b as f64).collect(), counts, SeriesKind::Bar)
}

impl NotebookDisplay for RetrievalPanel {
    fn mime_bundle(&self) -> Bundle {
        let mut rows = String::new();
        for r in &self.neighbours {
            let hit = r.label == self.true_label;
            rows.push_str(&format!(
                "<tr style=\"background:{}\"><td>{}</td><td>{}</td><td>{}{}</td><td style=\"text-align:right\">{:.4}</td></tr>",
                if hit { "#dff0d8" } else { "transparent" },
                r.rank,
                r.image.as_deref().unwrap_or(""),
                escape(&r.text),
                if hit { " ✓" } else { "" },
                r.distance
            ));
        }
        let counts: String =
            self.counts.iter().map(|(t, c)| format!("<tr><td>{}</td><td style=\"text-align:right\">{c}</td></tr>", escape(t))).collect();
        let html = format!(
            "<div class=\"rac-panel\" style=\"display:flex;gap:18px;align-items:flex-start\">\
             <div>{}<p>query #{}<br>true label: <b>{}</b></p></div>\
             <table><thead><tr><th>rank</th><th></th><th>retrieved label</th><th>distance</th></tr></thead><tbody>{rows}</tbody></table>\
             <div><table><thead><tr><th>label</th><th>count</th></tr></thead><tbody>{counts}</tbody></table>\
             <div style=\"width:360px\">{}</div></div></div>",
            self.image,
            self.query,
            escape(&self.true_text),
            self.histogram.to_svg().replacen("<svg ", "<svg style=\"width:360px;height:auto\" viewBox=\"0 0 720 420\" ", 1)
        );
        let text = format!(
            "query #{} (true: {}): {}",
            self.query,
            self.true_text,
            self.neighbours.iter().map(|r| format!("{} {:.3}", r.text, r.distance)).collect::<Vec<_>>().join(", ")
        );
        Bundle::new().with("text/html", html).with("text/plain", text)
    }
}

/// Several panels in one display (a cell shows one display).
impl NotebookDisplay for Vec<RetrievalPanel> {
    fn mime_bundle(&self) -> Bundle {
        let parts: Vec<Bundle> = self.iter().map(NotebookDisplay::mime_bundle).collect();
        let join = |mime: &str, sep: &str| parts.iter().filter_map(|b| b.get(mime)).collect::<Vec<_>>().join(sep);
        Bundle::new().with("text/html", join("text/html", "<hr>")).with("text/plain", join("text/plain", "\n"))
    }
}
