//! Figures: line charts and heat maps, each written as SVG and PNG, each
//! stamped with the command and commit that produced it.
//!
//! Text is drawn with the DejaVu Sans font shipped in `assets/fonts` (no
//! system font lookup), so figures render the same on any machine.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
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
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y); non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Ranges drawn as error bars (x, low, high): the spread over seeds.
    pub ranges: Vec<(f64, f64, f64)>,
    /// Per point (same order as `points`): the run missed its objective or
    /// failed, drawn hollow. Empty: none did.
    pub missed: Vec<bool>,
    /// A point to mark (the capacity knee), drawn as a larger diamond.
    pub knee: Option<(f64, f64)>,
}

impl Series {
    /// A line without error bars.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            points,
            ..Default::default()
        }
    }
}

/// A horizontal reference line (an objective, a ratio of 1).
#[derive(Debug, Clone)]
pub struct RefLine {
    /// Where.
    pub y: f64,
    /// Legend text.
    pub label: String,
}

/// Okabe–Ito colours (distinguishable with the common colour-vision
/// deficiencies), yellow left out for contrast on white, then greys and
/// three of Paul Tol's muted colours for the charts with more series.
const COLORS: [RGBColor; 12] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
    RGBColor(170, 170, 170),
    RGBColor(136, 34, 85),
    RGBColor(153, 153, 51),
    RGBColor(51, 34, 136),
];

/// A line chart (or one panel of [`Panels`]).
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    /// Title.
    pub title: String,
    /// X axis label, in words with the unit.
    pub x_label: String,
    /// Y axis label, in words with the unit.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines (at most ~6 for a readable panel).
    pub series: Vec<Series>,
    /// Horizontal reference lines, dashed.
    pub refs: Vec<RefLine>,
    /// X values to label (e.g. every measured instance count); empty: automatic.
    pub x_ticks: Vec<f64>,
}

/// Small multiples: panels side by side (two per row), one title, one stamp.
#[derive(Debug, Clone)]
pub struct Panels {
    /// Title of the whole figure.
    pub title: String,
    /// The panels.
    pub panels: Vec<LineChart>,
}

/// A tick label without trailing zeros: 2, 0.5, 1024, 0.25.
pub(crate) fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    };
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Ticks for a log axis over `lo..=hi`: 1, 2 and 5 times the powers of
/// ten inside it (1, 1.5, 2, 3, 5, 7 when that gives fewer than four).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo) {
        return Vec::new();
    }
    let within = |mantissas: &[f64]| -> Vec<f64> {
        let mut v = Vec::new();
        for k in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
            for m in mantissas {
                let t = m * 10f64.powi(k);
                if t >= lo && t <= hi {
                    v.push(t);
                }
            }
        }
        v
    };
    let v = within(&[1.0, 2.0, 5.0]);
    if v.len() >= 4 {
        v
    } else {
        within(&[1.0, 1.5, 2.0, 3.0, 5.0, 7.0])
    }
}

/// The data's range on one axis: `(lo, hi)` of the finite values (positive
/// ones only on a log axis), padded; a linear axis starts at 0 only when
/// the data comes close to it.
fn axis_range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        let (lo, hi) = if hi / lo < 1.5 {
            (lo / 1.25, hi * 1.25)
        } else {
            (lo, hi)
        };
        return (lo / 1.15, hi * 1.15);
    }
    let span = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
    let (mut a, b) = (lo - 0.08 * span, hi + 0.08 * span);
    if lo >= 0.0 && (a < 0.0 || lo < 0.25 * span) {
        a = 0.0;
    }
    (a, b)
}

const LEGEND_W: u32 = 210;

/// Viridis (perceptually uniform, colour-blind safe) at `t` in `0..=1`.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let f = t * (STOPS.len() - 1) as f64;
    let i = (f.floor() as usize).min(STOPS.len() - 2);
    let u = f - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Relative luminance `0..=1` (to pick black or white text).
fn luminance(c: RGBColor) -> f64 {
    (0.2126 * f64::from(c.0) + 0.7152 * f64::from(c.1) + 0.0722 * f64::from(c.2)) / 255.0
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
    fn draw_panels(&self, p: &Panels, stamp: &Stamp) -> Result<(), String>;
    fn draw_heatmap(&self, h: &Heatmap, stamp: &Stamp) -> Result<(), String>;
    fn draw_bars(&self, b: &BarChart, stamp: &Stamp) -> Result<(), String>;
}

impl<DB: DrawingBackend> Canvas for DrawingArea<DB, Shift> {
    fn draw_line_chart(&self, c: &LineChart, stamp: &Stamp) -> Result<(), String> {
        let s = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        self.fill(&WHITE).map_err(s)?;
        let (main, foot) = self.split_vertically(self.dim_in_pixel().1 - 22);
        draw_stamp(&foot, stamp)?;
        draw_panel(&main, c, 15)
    }

    fn draw_panels(&self, p: &Panels, stamp: &Stamp) -> Result<(), String> {
        let s = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        self.fill(&WHITE).map_err(s)?;
        let (main, foot) = self.split_vertically(self.dim_in_pixel().1 - 22);
        draw_stamp(&foot, stamp)?;
        let (head, body) = main.split_vertically(34);
        head.draw_text(
            &p.title,
            &("sans-serif", 18).into_font().color(&BLACK),
            (10, 8),
        )
        .map_err(s)?;
        let rows = p.panels.len().div_ceil(2).max(1);
        let cells = body.split_evenly((rows, 2));
        for (panel, area) in p.panels.iter().zip(cells.iter()) {
            draw_panel(area, panel, 14)?;
        }
        Ok(())
    }

    fn draw_bars(&self, c: &BarChart, stamp: &Stamp) -> Result<(), String> {
        let s = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        self.fill(&WHITE).map_err(s)?;
        let (main, foot) = self.split_vertically(self.dim_in_pixel().1 - 22);
        draw_stamp(&foot, stamp)?;
        let w = main.dim_in_pixel().0;
        let (main, legend) = main.split_horizontally(w - LEGEND_W);
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
            .caption(&c.title, ("sans-serif", 16))
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
            .x_desc(&c.x_label)
            .y_label_formatter(&|v| tick(*v))
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
                .map_err(|e| e.to_string())?;
            // No capacity found (the objective missed even at the lowest
            // rate, or no run): a cross on the baseline, not a gap.
            chart
                .draw_series(
                    ser.values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| !v.0.is_finite())
                        .map(|(i, _)| {
                            Cross::new(
                                (x_of(i) + width * 0.45, top * 0.02),
                                5,
                                color.stroke_width(2),
                            )
                        }),
                )
                .map_err(|e| e.to_string())?;
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
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let font = ("sans-serif", 12).into_font().color(&BLACK);
        let mut y = 44;
        for (k, ser) in c.series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            legend
                .draw(&Rectangle::new([(8, y - 5), (22, y + 5)], color.filled()))
                .map_err(e)?;
            legend
                .draw_text(&ser.label, &font, (30, y - 7))
                .map_err(e)?;
            y += 19;
        }
        if c.series
            .iter()
            .any(|s| s.values.iter().any(|v| !v.0.is_finite()))
        {
            y += 6;
            legend
                .draw(&Cross::new(
                    (15, y),
                    5,
                    RGBColor(90, 90, 90).stroke_width(2),
                ))
                .map_err(e)?;
            legend
                .draw_text("×: no capacity found", &font, (30, y - 7))
                .map_err(e)?;
        }
        Ok(())
    }

    fn draw_heatmap(&self, h: &Heatmap, stamp: &Stamp) -> Result<(), String> {
        let s = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        self.fill(&WHITE).map_err(s)?;
        let (main, foot) = self.split_vertically(self.dim_in_pixel().1 - 22);
        draw_stamp(&foot, stamp)?;
        let w = main.dim_in_pixel().0;
        let (grid, bar) = main.split_horizontally(w - 150);
        let (nx, ny) = (h.xs.len().max(1), h.ys.len().max(1));
        let vals = h.values.iter().flatten().copied().filter(|v| v.is_finite());
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo, hi)
        } else if lo.is_finite() {
            (lo - 0.5, lo + 0.5)
        } else {
            (0.0, 1.0)
        };
        // Colours on a log scale for ratios spanning a decade or more, so a
        // few outliers do not paint every other cell the same.
        let log = h.log_scale && lo > 0.0;
        let scale = |v: f64| {
            if log {
                (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
            } else {
                (v - lo) / (hi - lo)
            }
        };
        let mut chart = ChartBuilder::on(&grid)
            .caption(&h.title, ("sans-serif", 14))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((0..nx - 1).into_segmented(), (0..ny - 1).into_segmented())
            .map_err(|e| e.to_string())?;
        let xs = h.xs.clone();
        let ys = h.ys.clone();
        // Labels only on cell centres, one per cell.
        let name = |v: &[f64], at: &SegmentValue<usize>| match at {
            SegmentValue::CenterOf(i) => v.get(*i).map(|x| tick(*x)).unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&h.x_label)
            .y_desc(&h.y_label)
            .x_labels(nx)
            .y_labels(ny)
            .x_label_formatter(&|x| name(&xs, x))
            .y_label_formatter(&|y| name(&ys, y))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for (j, row) in h.values.iter().enumerate() {
            for (i, &v) in row.iter().enumerate() {
                let cell = [
                    (SegmentValue::Exact(i), SegmentValue::Exact(j)),
                    (SegmentValue::Exact(i + 1), SegmentValue::Exact(j + 1)),
                ];
                let color = if v.is_finite() {
                    viridis(scale(v))
                } else {
                    RGBColor(220, 220, 220)
                };
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        cell.clone(),
                        color.filled(),
                    )))
                    .map_err(|e| e.to_string())?;
                let ink = if luminance(color) > 0.5 { BLACK } else { WHITE };
                if h.threshold.is_some_and(|t| v.is_finite() && v > t) {
                    let (a, b) = (chart.backend_coord(&cell[0]), chart.backend_coord(&cell[1]));
                    let base = grid.get_base_pixel();
                    let r = |p: (i32, i32)| (p.0 - base.0, p.1 - base.1);
                    let (a, b) = (r(a), r(b));
                    grid.draw(&Rectangle::new(
                        [
                            (a.0.min(b.0) + 4, a.1.min(b.1) + 4),
                            (a.0.max(b.0) - 4, a.1.max(b.1) - 4),
                        ],
                        ink.stroke_width(3),
                    ))
                    .map_err(s)?;
                }
                let label = if v.is_finite() {
                    format!("{v:.3}")
                } else {
                    "—".into()
                };
                let style = ("sans-serif", 13)
                    .into_font()
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(
                        label,
                        (SegmentValue::CenterOf(i), SegmentValue::CenterOf(j)),
                        style,
                    )))
                    .map_err(|e| e.to_string())?;
            }
        }
        // The colour bar: low at the bottom, the threshold marked.
        let steps = 64;
        macro_rules! colour_bar {
            ($cb:expr) => {{
                let mut cb = $cb;
                cb.configure_mesh()
                    .disable_mesh()
                    .disable_x_axis()
                    .y_label_formatter(&|v| tick(*v))
                    .label_style(("sans-serif", 12))
                    .draw()
                    .map_err(|e| e.to_string())?;
                let at = |t: f64| {
                    if log {
                        (lo.ln() + t * (hi.ln() - lo.ln())).exp()
                    } else {
                        lo + t * (hi - lo)
                    }
                };
                cb.draw_series((0..steps).map(|k| {
                    let (a, b) = (k as f64 / steps as f64, (k + 1) as f64 / steps as f64);
                    Rectangle::new(
                        [(0.0, at(a)), (1.0, at(b))],
                        viridis((a + b) / 2.0).filled(),
                    )
                }))
                .map_err(|e| e.to_string())?;
                if let Some(t) = h.threshold.filter(|t| *t > lo && *t < hi) {
                    cb.draw_series(std::iter::once(PathElement::new(
                        vec![(0.0, t), (1.0, t)],
                        WHITE.stroke_width(3),
                    )))
                    .map_err(|e| e.to_string())?;
                }
            }};
        }
        let mut cbb = ChartBuilder::on(&bar);
        cbb.margin_top(52)
            .margin_bottom(56)
            .margin_left(10)
            .margin_right(8)
            .y_label_area_size(0)
            .right_y_label_area_size(56);
        if log {
            colour_bar!(cbb
                .build_cartesian_2d(
                    0.0..1.0,
                    (lo..hi).log_scale().with_key_points(log_ticks(lo, hi))
                )
                .map_err(|e| e.to_string())?);
        } else {
            colour_bar!(cbb
                .build_cartesian_2d(0.0..1.0, lo..hi)
                .map_err(|e| e.to_string())?);
        }
        bar.draw_text(
            &h.value_label,
            &("sans-serif", 12).into_font().color(&BLACK),
            (4, 20),
        )
        .map_err(s)?;
        if let Some(t) = h.threshold {
            let bottom = bar.dim_in_pixel().1 as i32 - 40;
            bar.draw_text(
                &format!("outlined: > {}", tick(t)),
                &("sans-serif", 12).into_font().color(&BLACK),
                (4, bottom),
            )
            .map_err(s)?;
        }
        Ok(())
    }
}

fn draw_stamp<DB: DrawingBackend>(
    foot: &DrawingArea<DB, Shift>,
    stamp: &Stamp,
) -> Result<(), String> {
    foot.draw_text(
        &stamp.text(),
        &("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
        (8, 4),
    )
    .map_err(|e| e.to_string())
}

/// One chart with its legend in a column to the right of the data.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &LineChart,
    title_px: u32,
) -> Result<(), String> {
    let w = area.dim_in_pixel().0;
    let (plot_area, legend) = area.split_horizontally(w.saturating_sub(LEGEND_W).max(w / 2));
    let xs = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(c.x_ticks.iter().copied());
    let (x0, x1) = axis_range(xs, c.log_x);
    let ys = c
        .series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .map(|p| p.1)
                .chain(s.ranges.iter().flat_map(|r| [r.1, r.2]))
        })
        .chain(c.refs.iter().map(|r| r.y));
    let (y0, y1) = axis_range(ys, c.log_y);
    let mut b = ChartBuilder::on(&plot_area);
    b.caption(&c.title, ("sans-serif", title_px))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(&c.x_label)
                .y_desc(&c.y_label)
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .label_style(("sans-serif", 12))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(|e| e.to_string())?;
            for r in &c.refs {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(x0, r.y), (x1, r.y)],
                        8,
                        5,
                        RGBColor(90, 90, 90).stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?;
            }
            for (i, ser) in c.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let p: Vec<(f64, f64, bool)> = ser
                    .points
                    .iter()
                    .enumerate()
                    .filter(|(_, (x, y))| x.is_finite() && y.is_finite())
                    .map(|(k, &(x, y))| (x, y, ser.missed.get(k).copied().unwrap_or(false)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(
                        p.iter().map(|&(x, y, _)| (x, y)),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(
                        ser.ranges
                            .iter()
                            .filter(|(x, l, h)| x.is_finite() && l.is_finite() && h.is_finite())
                            .map(|&(x, l, h)| {
                                // The whisker's middle is the line's own point.
                                let mid = p
                                    .iter()
                                    .find(|q| (q.0 - x).abs() <= 1e-9 * x.abs().max(1.0))
                                    .map_or((l + h) / 2.0, |q| q.1);
                                ErrorBar::new_vertical(x, l, mid, h, color.stroke_width(1), 6)
                            }),
                    )
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(p.iter().map(|&(x, y, missed)| {
                        if missed {
                            Circle::new((x, y), 4, color.stroke_width(2))
                        } else {
                            Circle::new((x, y), 3, color.filled())
                        }
                    }))
                    .map_err(|e| e.to_string())?;
                if let Some(k) = ser.knee.filter(|k| k.0.is_finite() && k.1.is_finite()) {
                    chart
                        .draw_series(std::iter::once(Cross::new(k, 7, color.stroke_width(3))))
                        .map_err(|e| e.to_string())?;
                }
            }
        }};
    }
    let key = |ticks: &[f64], lo: f64, hi: f64| -> Vec<f64> {
        let given: Vec<f64> = ticks
            .iter()
            .copied()
            .filter(|t| *t >= lo && *t <= hi)
            .collect();
        if given.is_empty() {
            log_ticks(lo, hi)
        } else {
            given
        }
    };
    match (c.log_x, c.log_y) {
        (true, false) => finish!(b
            .build_cartesian_2d(
                (x0..x1)
                    .log_scale()
                    .with_key_points(key(&c.x_ticks, x0, x1)),
                y0..y1
            )
            .map_err(|e| e.to_string())?),
        (true, true) => finish!(b
            .build_cartesian_2d(
                (x0..x1)
                    .log_scale()
                    .with_key_points(key(&c.x_ticks, x0, x1)),
                (y0..y1).log_scale().with_key_points(log_ticks(y0, y1))
            )
            .map_err(|e| e.to_string())?),
        (false, true) => finish!(b
            .build_cartesian_2d(
                x0..x1,
                (y0..y1).log_scale().with_key_points(log_ticks(y0, y1))
            )
            .map_err(|e| e.to_string())?),
        (false, false) => finish!(b
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?),
    }
    draw_legend(&legend, c)
}

/// The legend, outside the data: one row per line, then the markers' and
/// reference lines' meanings.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &LineChart,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    let mut y = 44;
    let row = 19;
    for (i, ser) in c.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        area.draw(&PathElement::new(
            vec![(6, y), (30, y)],
            color.stroke_width(2),
        ))
        .map_err(e)?;
        area.draw(&Circle::new((18, y), 3, color.filled()))
            .map_err(e)?;
        area.draw_text(&ser.label, &font, (36, y - 7)).map_err(e)?;
        y += row;
    }
    y += 6;
    let grey = RGBColor(90, 90, 90);
    for r in &c.refs {
        area.draw(&PathElement::new(
            vec![(6, y), (14, y)],
            grey.stroke_width(2),
        ))
        .map_err(e)?;
        area.draw(&PathElement::new(
            vec![(20, y), (30, y)],
            grey.stroke_width(2),
        ))
        .map_err(e)?;
        area.draw_text(&r.label, &font, (36, y - 7)).map_err(e)?;
        y += row;
    }
    if c.series.iter().any(|s| s.missed.iter().any(|m| *m)) {
        area.draw(&Circle::new((18, y), 4, grey.stroke_width(2)))
            .map_err(e)?;
        area.draw_text("hollow: run missed its SLO", &font, (36, y - 7))
            .map_err(e)?;
        y += row;
    }
    if c.series.iter().any(|s| s.knee.is_some()) {
        area.draw(&Cross::new((18, y), 6, grey.stroke_width(3)))
            .map_err(e)?;
        area.draw_text("×: capacity (knee)", &font, (36, y - 7))
            .map_err(e)?;
    }
    Ok(())
}

/// Draw small multiples to `stem.{svg,png}`.
pub fn line_panels(stem: &Path, p: &Panels, stamp: &Stamp) -> Result<Vec<PathBuf>, PlotError> {
    let rows = p.panels.len().div_ceil(2).max(1) as u32;
    write_both(
        stem,
        (1400, 34 + 22 + 380 * rows),
        |r| r.draw_panels(p, stamp),
        |r| r.draw_panels(p, stamp),
    )
}

/// Draw a line chart to `stem.{svg,png}`.
pub fn line_chart(stem: &Path, c: &LineChart, stamp: &Stamp) -> Result<Vec<PathBuf>, PlotError> {
    write_both(
        stem,
        (1000, 560),
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
    /// What the colours mean (above the colour bar).
    pub value_label: String,
    /// Cells above this are outlined (e.g. 1: the objective missed).
    pub threshold: Option<f64>,
    /// Colours on a log scale (for positive ratios spanning a decade).
    pub log_scale: bool,
}

/// Draw a heat map to `stem.{svg,png}`.
pub fn heatmap(stem: &Path, h: &Heatmap, stamp: &Stamp) -> Result<Vec<PathBuf>, PlotError> {
    write_both(
        stem,
        (880, 580),
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
    /// Y axis label, in words with the unit.
    pub y_label: String,
    /// X axis label (what the categories are).
    pub x_label: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            command: "sim study".into(),
            commit: "test".into(),
        }
    }

    fn out(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kvroute-plot-{}", std::process::id()));
        dir.join(name)
    }

    #[test]
    fn ticks_drop_trailing_zeros() {
        assert_eq!(tick(2.0), "2");
        assert_eq!(tick(1024.0), "1024");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(0.5), "0.5");
        assert_eq!(tick(1.5), "1.5");
        assert_eq!(tick(0.0), "0");
    }

    #[test]
    fn linear_axes_start_at_zero_only_near_it() {
        // Data far from 0: the axis hugs it, so small differences show.
        let (a, b) = axis_range([10.0, 10.4, 10.2].into_iter(), false);
        assert!(a > 9.0 && a < 10.0 && b > 10.4 && b < 11.0, "{a}..{b}");
        // Data near 0: the axis starts there.
        let (a, _) = axis_range([0.1, 2.0].into_iter(), false);
        assert_eq!(a, 0.0);
        // Log axes drop non-positive values.
        let (a, b) = axis_range([0.0, 2.0, 1024.0].into_iter(), true);
        assert!(a > 1.0 && a < 2.0 && b > 1024.0, "{a}..{b}");
    }

    #[test]
    fn log_ticks_are_round_numbers_inside_the_range() {
        assert_eq!(
            log_ticks(0.9, 110.0),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        let narrow = log_ticks(0.12, 0.9);
        assert_eq!(narrow.len(), 5, "{narrow:?}");
        assert!(narrow.iter().all(|t| *t >= 0.12 && *t <= 0.9));
        assert!(log_ticks(0.0, 1.0).is_empty());
    }

    #[test]
    fn viridis_runs_dark_to_light() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert!(luminance(viridis(0.0)) < luminance(viridis(0.5)));
        assert!(luminance(viridis(0.5)) < luminance(viridis(1.0)));
    }

    /// Every chart kind draws and writes both files (the figures themselves
    /// are looked at in docs/figures).
    #[test]
    fn every_chart_kind_is_written() {
        let mut s = Series::new("cache_affinity", vec![(1.0, 0.2), (2.0, 0.3), (4.0, 0.9)]);
        s.missed = vec![false, false, true];
        s.knee = Some((3.0, 0.5));
        s.ranges = vec![(2.0, 0.25, 0.4)];
        let chart = LineChart {
            title: "p90 TTFT against offered load".into(),
            x_label: "offered requests per second".into(),
            y_label: "p90 time to first token (s)".into(),
            log_x: true,
            log_y: true,
            series: vec![
                s.clone(),
                Series::new("round_robin", vec![(1.0, 0.3), (2.0, 0.6)]),
            ],
            refs: vec![RefLine {
                y: 0.5,
                label: "TTFT objective 0.5 s".into(),
            }],
            x_ticks: vec![1.0, 2.0, 4.0],
        };
        let mut files = line_chart(&out("line"), &chart, &stamp()).unwrap();
        files.extend(
            line_panels(
                &out("panels"),
                &Panels {
                    title: "small multiples".into(),
                    panels: vec![chart.clone(), chart.clone(), chart],
                },
                &stamp(),
            )
            .unwrap(),
        );
        files.extend(
            heatmap(
                &out("heat"),
                &Heatmap {
                    title: "p90 TTFT ÷ objective".into(),
                    x_label: "α".into(),
                    y_label: "β".into(),
                    xs: vec![0.0, 0.5, 1.0],
                    ys: vec![0.0, 0.25],
                    values: vec![vec![0.4, 0.8, 1.2], vec![0.5, f64::NAN, 0.9]],
                    value_label: "p90 TTFT ÷ objective".into(),
                    threshold: Some(1.0),
                    log_scale: true,
                },
                &stamp(),
            )
            .unwrap(),
        );
        files.extend(
            bar_chart(
                &out("bars"),
                &BarChart {
                    title: "capacity ÷ round-robin's".into(),
                    y_label: "capacity ratio".into(),
                    x_label: "workload".into(),
                    categories: vec!["gsp".into(), "rag".into()],
                    series: vec![
                        BarSeries {
                            label: "cache_affinity".into(),
                            values: vec![(1.4, 1.3, 1.5), (f64::NAN, f64::NAN, f64::NAN)],
                        },
                        BarSeries {
                            label: "weighted".into(),
                            values: vec![(1.2, 1.1, 1.25), (0.9, 0.85, 1.0)],
                        },
                    ],
                    reference: Some(1.0),
                },
                &stamp(),
            )
            .unwrap(),
        );
        assert_eq!(files.len(), 8);
        for f in &files {
            let n = std::fs::metadata(f).unwrap().len();
            assert!(n > 2000, "{} is only {n} bytes", f.display());
        }
    }
}
