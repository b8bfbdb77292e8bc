//! Figures: line charts and heat maps, each written as SVG and PNG, each
//! stamped with the command and commit that produced it.
//!
//! Text is drawn with the DejaVu Sans font shipped in `assets/fonts` (no
//! system font lookup), so figures render the same on any machine.

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// A figure that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Registration only fails on a malformed font, which the shipped one is not.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Provenance printed under every figure.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// The command that produced the figure.
    pub command: String,
    /// The commit it ran at.
    pub commit: String,
}

impl Stamp {
    fn text(&self) -> String {
        format!("{}  @ {}", self.command, self.commit)
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y); non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Ranges drawn as error bars (x, low, high): the spread over seeds.
    pub ranges: Vec<(f64, f64, f64)>,
}

impl Series {
    /// A line without error bars.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            points,
            ranges: Vec::new(),
        }
    }
}

const COLORS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(255, 215, 0),
];

/// A line chart.
#[derive(Debug, Clone)]
pub struct LineChart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis (base 2 ticks).
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Write `stem.svg` and `stem.png` with the same drawing; returns both paths.
fn write_both(
    stem: &Path,
    size: (u32, u32),
    svg_draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
    png_draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<Vec<PathBuf>, PlotError> {
    register_font();
    if let Some(dir) = stem.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(stem, e))?;
    }
    // Appended, not replaced: a stem may hold dots (`llama3.2-3b`).
    let with = |ext: &str| {
        let mut p = stem.as_os_str().to_owned();
        p.push(".");
        p.push(ext);
        PathBuf::from(p)
    };
    let (svg, png) = (with("svg"), with("png"));
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        svg_draw(&root).map_err(|e| err(&svg, e))?;
        root.present().map_err(|e| err(&svg, e))?;
    }
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        png_draw(&root).map_err(|e| err(&png, e))?;
        root.present().map_err(|e| err(&png, e))?;
    }
    Ok(vec![svg, png])
}

trait Canvas {
    fn draw_line_chart(&self, c: &LineChart, stamp: &Stamp) -> Result<(), String>;
    fn draw_heatmap(&self, h: &Heatmap, stamp: &Stamp) -> Result<(), String>;
    fn draw_bars(&self, b: &BarChart, stamp: &Stamp) -> Result<(), String>;
}

impl<DB: DrawingBackend> Canvas for DrawingArea<DB, Shift> {
    fn draw_line_chart(&self, c: &LineChart, stamp: &Stamp) -> Result<(), String> {
        let s = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        self.fill(&WHITE).map_err(s)?;
        let (main, foot) = self.split_vertically(self.dim_in_pixel().1 - 22);
        foot.draw_text(
            &stamp.text(),
            &("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
            (8, 4),
        )
        .map_err(s)?;
        let pts = || {
            c.series
                .iter()
                .flat_map(|x| x.points.iter())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let (mut x0, mut x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(x, _)| {
            (a.min(x), b.max(x))
        });
        let y1 = pts().fold(0.0f64, |a, &(_, y)| a.max(y)).max(
            c.series
                .iter()
                .flat_map(|x| x.ranges.iter())
                .map(|r| r.2)
                .filter(|y| y.is_finite())
                .fold(0.0, f64::max),
        );
        let y0 = pts()
            .map(|&(_, y)| y)
            .chain(c.series.iter().flat_map(|x| x.ranges.iter()).map(|r| r.1))
            .filter(|y| y.is_finite() && *y > 0.0)
            .fold(f64::INFINITY, f64::min);
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let y1 = if y1 > 0.0 { y1 * 1.08 } else { 1.0 };
        let mut b = ChartBuilder::on(&main);
        b.caption(&c.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64);
        macro_rules! finish {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(&c.x_label)
                    .y_desc(&c.y_label)
                    .label_style(("sans-serif", 13))
                    .draw()
                    .map_err(|e| e.to_string())?;
                for (i, ser) in c.series.iter().enumerate() {
                    let color = COLORS[i % COLORS.len()];
                    let p: Vec<(f64, f64)> = ser
                        .points
                        .iter()
                        .copied()
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                        .collect();
                    chart
                        .draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))
                        .map_err(|e| e.to_string())?
                        .label(ser.label.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                        });
                    chart
                        .draw_series(p.iter().map(|&xy| Circle::new(xy, 3, color.filled())))
                        .map_err(|e| e.to_string())?;
                    chart
                        .draw_series(
                            ser.ranges
                                .iter()
                                .filter(|(x, l, h)| x.is_finite() && l.is_finite() && h.is_finite())
                                .map(|&(x, l, h)| {
                                    ErrorBar::new_vertical(
                                        x,
                                        l,
                                        (l + h) / 2.0,
                                        h,
                                        color.filled(),
                                        6,
                                    )
                                }),
                        )
                        .map_err(|e| e.to_string())?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .label_font(("sans-serif", 12))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| e.to_string())?;
            }};
        }
        let y0 = if y0.is_finite() { y0 * 0.8 } else { 1e-3 };
        let pad = (x1 - x0) * 0.04;
        match (c.log_x, c.log_y) {
            (true, false) => finish!(b
                .build_cartesian_2d((x0.max(1e-9) * 0.8..x1 * 1.25).log_scale(), 0.0..y1)
                .map_err(|e| e.to_string())?),
            (true, true) => finish!(b
                .build_cartesian_2d(
                    (x0.max(1e-9) * 0.8..x1 * 1.25).log_scale(),
                    (y0..y1.max(y0 * 2.0)).log_scale()
                )
                .map_err(|e| e.to_string())?),
            (false, true) => finish!(b
                .build_cartesian_2d(x0 - pad..x1 + pad, (y0..y1.max(y0 * 2.0)).log_scale())
                .map_err(|e| e.to_string())?),
            (false, false) => finish!(b
                .build_cartesian_2d(x0 - pad..x1 + pad, 0.0..y1)
                .map_err(|e| e.to_string())?),
        }
        Ok(())
    }

    fn draw_bars(&self, c: &BarChart, stamp: &Stamp) -> Result<(), String> {
        let s = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        self.fill(&WHITE).map_err(s)?;
        let (main, foot) = self.split_vertically(self.dim_in_pixel().1 - 22);
        foot.draw_text(
            &stamp.text(),
            &("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
            (8, 4),
        )
        .map_err(s)?;
        let ncat = c.categories.len().max(1);
        let nser = c.series.len().max(1);
        let top = c
            .series
            .iter()
            .flat_map(|s| s.values.iter())
            .flat_map(|&(m, _, h)| [m, h])
            .filter(|v| v.is_finite())
            .fold(c.reference.unwrap_or(0.0), f64::max);
        let top = if top > 0.0 { top * 1.1 } else { 1.0 };
        let cats = c.categories.clone();
        let mut chart = ChartBuilder::on(&main)
            .caption(&c.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..ncat as f64, 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(ncat * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 0.01 {
                    cats.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(&c.y_label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        let width = 0.8 / nser as f64;
        for (k, ser) in c.series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let x_of = |i: usize| i as f64 + 0.1 + width * k as f64;
            chart
                .draw_series(
                    ser.values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.0.is_finite())
                        .map(|(i, &(m, _, _))| {
                            Rectangle::new(
                                [(x_of(i), 0.0), (x_of(i) + width * 0.9, m)],
                                color.filled(),
                            )
                        }),
                )
                .map_err(|e| e.to_string())?
                .label(ser.label.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
            chart
                .draw_series(
                    ser.values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.1.is_finite() && v.2.is_finite() && v.1 < v.2)
                        .map(|(i, &(m, l, h))| {
                            ErrorBar::new_vertical(
                                x_of(i) + width * 0.45,
                                l,
                                m,
                                h,
                                BLACK.filled(),
                                4,
                            )
                        }),
                )
                .map_err(|e| e.to_string())?;
        }
        if let Some(r) = c.reference {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, r), (ncat as f64, r)],
                    BLACK.mix(0.6).stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 11))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn draw_heatmap(&self, h: &Heatmap, stamp: &Stamp) -> Result<(), String> {
        let s = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        self.fill(&WHITE).map_err(s)?;
        let (main, foot) = self.split_vertically(self.dim_in_pixel().1 - 22);
        foot.draw_text(
            &stamp.text(),
            &("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
            (8, 4),
        )
        .map_err(s)?;
        let (nx, ny) = (h.xs.len(), h.ys.len());
        let vals = h.values.iter().flatten().copied().filter(|v| v.is_finite());
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let mut chart = ChartBuilder::on(&main)
            .caption(&h.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0..nx, 0..ny)
            .map_err(|e| e.to_string())?;
        let xs = h.xs.clone();
        let ys = h.ys.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&h.x_label)
            .y_desc(&h.y_label)
            .x_labels(nx + 1)
            .y_labels(ny + 1)
            .x_label_formatter(&|i| xs.get(*i).map(|v| format!("{v}")).unwrap_or_default())
            .y_label_formatter(&|j| ys.get(*j).map(|v| format!("{v}")).unwrap_or_default())
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for (j, row) in h.values.iter().enumerate() {
            for (i, &v) in row.iter().enumerate() {
                let t = if v.is_finite() && hi > lo {
                    (v - lo) / (hi - lo)
                } else {
                    0.5
                };
                // Low (good) = green, high (bad) = red.
                let color = if v.is_finite() {
                    RGBColor((60.0 + 190.0 * t) as u8, (200.0 - 150.0 * t) as u8, 70)
                } else {
                    RGBColor(200, 200, 200)
                };
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(i, j), (i + 1, j + 1)],
                        color.filled(),
                    )))
                    .map_err(|e| e.to_string())?;
                let label = if v.is_finite() {
                    format!("{v:.3}")
                } else {
                    "—".into()
                };
                chart
                    .draw_series(std::iter::once(Text::new(
                        label,
                        (i, j + 1),
                        ("sans-serif", 12).into_font(),
                    )))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// Draw a line chart to `stem.{svg,png}`.
pub fn line_chart(stem: &Path, c: &LineChart, stamp: &Stamp) -> Result<Vec<PathBuf>, PlotError> {
    write_both(
        stem,
        (900, 560),
        |r| r.draw_line_chart(c, stamp),
        |r| r.draw_line_chart(c, stamp),
    )
}

/// A heat map: `values[j][i]` is the cell at (`xs[i]`, `ys[j]`).
#[derive(Debug, Clone)]
pub struct Heatmap {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Column values.
    pub xs: Vec<f64>,
    /// Row values.
    pub ys: Vec<f64>,
    /// Cells, row-major.
    pub values: Vec<Vec<f64>>,
}

/// Draw a heat map to `stem.{svg,png}`.
pub fn heatmap(stem: &Path, h: &Heatmap, stamp: &Stamp) -> Result<Vec<PathBuf>, PlotError> {
    write_both(
        stem,
        (760, 560),
        |r| r.draw_heatmap(h, stamp),
        |r| r.draw_heatmap(h, stamp),
    )
}

/// One group member of a bar chart: a value per category.
#[derive(Debug, Clone)]
pub struct BarSeries {
    /// Legend label.
    pub label: String,
    /// Per category: (value, low, high); non-finite values are not drawn.
    pub values: Vec<(f64, f64, f64)>,
}

/// Grouped bars with error bars: one group per category, one bar per series.
#[derive(Debug, Clone)]
pub struct BarChart {
    /// Title.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// Category names (x axis).
    pub categories: Vec<String>,
    /// The series.
    pub series: Vec<BarSeries>,
    /// A horizontal reference line (e.g. 1 for ratios).
    pub reference: Option<f64>,
}

/// Draw a bar chart to `stem.{svg,png}`.
pub fn bar_chart(stem: &Path, c: &BarChart, stamp: &Stamp) -> Result<Vec<PathBuf>, PlotError> {
    write_both(
        stem,
        (1100, 600),
        |r| r.draw_bars(c, stamp),
        |r| r.draw_bars(c, stamp),
    )
}
