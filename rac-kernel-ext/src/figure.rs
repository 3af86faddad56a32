//! A small chart description rendered twice: as a plotly figure (interactive in JupyterLab,
//! with no network: the plotly renderer ships with JupyterLab's plotly extension) and as a
//! static SVG drawn by plotters (what GitHub, nbconvert's HTML and any other viewer show).
//! Both renderings go into one display bundle.

use plotly::common::{DashType, Line, Marker, Mode, Title};
use plotly::layout::{Axis, AxisType, BarMode, Layout};
use plotly::{Bar, Plot, Scatter};
use plotters::prelude::*;

use crate::display::{Bundle, NotebookDisplay};

/// How one series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// Points joined by a line.
    Line,
    /// Points joined by a dashed line.
    DashedLine,
    /// Points only.
    Markers,
    /// Bars at categorical x positions (grouped with the chart's other bar series).
    Bar,
}

/// One series: `x` and `y` of equal length.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// x values (for a categorical chart, positions 0, 1, … into [`Chart::categories`]).
    pub x: Vec<f64>,
    /// y values.
    pub y: Vec<f64>,
    /// How it is drawn.
    pub kind: SeriesKind,
    /// Its colour (an index into the palette); by default, its position in the chart.
    pub color: Option<usize>,
}

/// A 2-d chart: lines, markers or grouped bars.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// The title.
    pub title: String,
    /// The x-axis title.
    pub x_title: String,
    /// The y-axis title.
    pub y_title: String,
    /// A logarithmic x axis.
    pub x_log: bool,
    /// A logarithmic y axis.
    pub y_log: bool,
    /// Category names of a categorical x axis (empty for a numeric one).
    pub categories: Vec<String>,
    /// The series, drawn in order.
    pub series: Vec<Series>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

impl Chart {
    /// A chart with a title and axis titles and no series yet.
    pub fn new(title: impl Into<String>, x_title: impl Into<String>, y_title: impl Into<String>) -> Self {
        Chart { title: title.into(), x_title: x_title.into(), y_title: y_title.into(), ..Default::default() }
    }

    /// Add a series.
    pub fn with_series(mut self, name: impl Into<String>, x: Vec<f64>, y: Vec<f64>, kind: SeriesKind) -> Self {
        self.series.push(Series { name: name.into(), x, y, kind, color: None });
        self
    }

    /// Add a series drawn in palette colour `color` (series that belong together share one).
    pub fn with_colored_series(mut self, name: impl Into<String>, x: Vec<f64>, y: Vec<f64>, kind: SeriesKind, color: usize) -> Self {
        self.series.push(Series { name: name.into(), x, y, kind, color: Some(color) });
        self
    }

    fn color_of(&self, i: usize) -> RGBColor {
        PALETTE[self.series[i].color.unwrap_or(i) % PALETTE.len()]
    }

    /// The plotly figure.
    pub fn to_plotly(&self) -> Plot {
        let mut plot = Plot::new();
        for (i, s) in self.series.iter().enumerate() {
            let color = hex(self.color_of(i));
            if s.kind == SeriesKind::Bar {
                let x: Vec<String> = s.x.iter().map(|&p| self.category(p)).collect();
                plot.add_trace(Bar::new(x, s.y.clone()).name(&s.name).marker(Marker::new().color(color)));
                continue;
            }
            let mode = if s.kind == SeriesKind::Markers { Mode::Markers } else { Mode::LinesMarkers };
            let dash = if s.kind == SeriesKind::DashedLine { DashType::Dash } else { DashType::Solid };
            let line = Line::new().dash(dash).color(color.clone());
            let marker = Marker::new().color(color);
            if self.categories.is_empty() {
                plot.add_trace(Scatter::new(s.x.clone(), s.y.clone()).mode(mode).name(&s.name).line(line).marker(marker));
            } else {
                let x: Vec<String> = s.x.iter().map(|&p| self.category(p)).collect();
                plot.add_trace(Scatter::new(x, s.y.clone()).mode(mode).name(&s.name).line(line).marker(marker));
            }
        }
        let axis = |title: &str, log: bool| {
            let a = Axis::new().title(Title::with_text(title));
            if log { a.type_(AxisType::Log) } else { a }
        };
        plot.set_layout(
            Layout::new()
                .title(Title::with_text(&self.title))
                .x_axis(axis(&self.x_title, self.x_log))
                .y_axis(axis(&self.y_title, self.y_log))
                .bar_mode(BarMode::Group)
                .height(420),
        );
        plot
    }

    fn category(&self, position: f64) -> String {
        self.categories.get(position.round().max(0.0) as usize).cloned().unwrap_or_else(|| position.to_string())
    }

    fn finite_points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.series
            .iter()
            .flat_map(|s| s.x.iter().copied().zip(s.y.iter().copied()))
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.x_log || *x > 0.0) && (!self.y_log || *y > 0.0))
    }

    /// The static rendering: an SVG document.
    pub fn to_svg(&self) -> String {
        let mut svg = String::new();
        if let Err(e) = self.draw_svg(&mut svg) {
            return format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"40\"><text x=\"4\" y=\"24\">chart could not be drawn: {}</text></svg>",
                crate::display::escape(&e.to_string())
            );
        }
        svg
    }

    fn draw_svg(&self, out: &mut String) -> Result<(), Box<dyn std::error::Error + '_>> {
        let categorical = !self.categories.is_empty();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for (x, y) in self.finite_points() {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if !x0.is_finite() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if categorical {
            (x0, x1) = (-0.5, self.categories.len() as f64 - 0.5);
        }
        if self.series.iter().any(|s| s.kind == SeriesKind::Bar) && !self.y_log {
            y0 = y0.min(0.0);
        }
        let pad = |a: f64, b: f64, log: bool| {
            if log {
                (a / 1.2, b * 1.2)
            } else {
                let d = if b > a { (b - a) * 0.06 } else { a.abs().max(1.0) * 0.1 };
                (a - d, b + d)
            }
        };
        let (x0, x1) = if categorical { (x0, x1) } else { pad(x0, x1, self.x_log) };
        let (y0, y1) = pad(y0, y1, self.y_log);

        let root = SVGBackend::with_string(out, (720, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut builder = ChartBuilder::on(&root);
        builder.caption(&self.title, ("sans-serif", 18)).margin(12).x_label_area_size(46).y_label_area_size(62);
        // Four axis combinations, each its own coordinate type in plotters.
        macro_rules! draw {
            ($xr:expr, $yr:expr) => {{
                let mut chart = builder.build_cartesian_2d($xr, $yr)?;
                let cats = &self.categories;
                chart
                    .configure_mesh()
                    .x_desc(&self.x_title)
                    .y_desc(&self.y_title)
                    .x_label_style(("sans-serif", if categorical { 11 } else { 13 }))
                    .light_line_style(WHITE.mix(0.0))
                    .x_labels(if categorical { cats.len().max(2) } else { 10 })
                    .x_label_formatter(&|v: &f64| {
                        if categorical { self.category(*v) } else { format_tick(*v) }
                    })
                    .y_label_formatter(&|v: &f64| format_tick(*v))
                    .draw()?;
                let bars: Vec<usize> = (0..self.series.len()).filter(|&i| self.series[i].kind == SeriesKind::Bar).collect();
                for (i, s) in self.series.iter().enumerate() {
                    let color = self.color_of(i);
                    let pts: Vec<(f64, f64)> = s.x.iter().copied().zip(s.y.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
                    let anno = match s.kind {
                        SeriesKind::Bar => {
                            let slot = bars.iter().position(|&b| b == i).unwrap_or(0) as f64;
                            let w = 0.8 / bars.len().max(1) as f64;
                            let base = if self.y_log { y0 } else { 0.0 };
                            chart.draw_series(pts.iter().map(|&(x, y)| {
                                let left = x - 0.4 + slot * w;
                                Rectangle::new([(left, base), (left + w * 0.95, y)], color.filled())
                            }))?
                        }
                        SeriesKind::Markers => chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?,
                        SeriesKind::Line | SeriesKind::DashedLine => {
                            if s.kind == SeriesKind::DashedLine {
                                chart.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, color.stroke_width(2)))?;
                            } else {
                                chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
                            }
                            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?
                        }
                    };
                    anno.label(s.name.as_str()).legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 14, y + 4)], color.filled()));
                }
                if self.series.len() > 1 {
                    chart
                        .configure_series_labels()
                        .position(SeriesLabelPosition::LowerRight)
                        .background_style(WHITE.mix(0.85))
                        .border_style(BLACK.mix(0.3))
                        .draw()?;
                }
            }};
        }
        match (self.x_log, self.y_log) {
            (false, false) => draw!(x0..x1, y0..y1),
            (true, false) => draw!((x0..x1).log_scale(), y0..y1),
            (false, true) => draw!(x0..x1, (y0..y1).log_scale()),
            (true, true) => draw!((x0..x1).log_scale(), (y0..y1).log_scale()),
        }
        root.present()?;
        Ok(())
    }
}

fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 10_000.0 {
        format!("{:.0e}", v)
    } else if a >= 10.0 || (v.fract() == 0.0) {
        format!("{v:.0}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

impl NotebookDisplay for Chart {
    fn mime_bundle(&self) -> Bundle {
        let text = format!("{} ({} series)", self.title, self.series.len());
        Bundle::new().with("application/vnd.plotly.v1+json", self.to_plotly().to_json()).with("image/svg+xml", self.to_svg()).with("text/plain", text)
    }
}
