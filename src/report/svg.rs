//! Inline SVG bar charts for the HTML report: no script, no fonts or images to fetch, so the page reads the same
//! in a mail client, from a file, or on a host without network. Axis ticks fall on round durations or sizes,
//! and a reference line (an objective) can be drawn across the bars.
//!
//! The axis is scaled to the bars, not to the reference: a 200 ms restore drawn against a 10-minute objective
//! would be a bar 1/3000 of the plot high, an empty chart. The reference line is drawn where it falls when it
//! is at most [`REFERENCE_FIT`] times the highest bar (the bars then keep at least a quarter of the height); a
//! reference further up is named in a label at the top of the plot ("objective 10m 00s, above the scale")
//! instead. The label, not the distance, then tells how far off it is, and the bars stay comparable with each
//! other, which is what the chart is for.

use std::fmt::{self, Write};

use super::escape;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 46.0;
/// Beyond this many bars, only every n-th gets an axis label, so the labels never overlap.
const MAX_LABELS: usize = 16;
/// The highest a reference may be, relative to the highest bar, and still stretch the axis to include it.
const REFERENCE_FIT: f64 = 4.0;
/// The least height of a bar with a value above zero, in pixels, so it is never mistaken for a missing one.
const MIN_BAR: f64 = 3.0;

/// What the values measure: it picks round tick steps and the tick labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Seconds,
    Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Bad,
    Neutral,
    /// Not applicable (e.g. a day before there was anything to back up): grey, and out of the way.
    Inactive,
}

impl Tone {
    fn color(self) -> &'static str {
        match self {
            Tone::Good => "#2e9d6a",
            Tone::Bad => "#d14343",
            Tone::Neutral => "#4f6fd6",
            Tone::Inactive => "#98a2b3",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bar {
    /// First line under the bar.
    pub label: String,
    /// Second line under the bar (may be empty).
    pub sublabel: String,
    /// `None` draws "n/a" instead of a bar.
    pub value: Option<f64>,
    pub tone: Tone,
    /// The text above the bar.
    pub note: String,
    /// Shown on hover.
    pub tooltip: String,
}

#[derive(Debug, Clone)]
pub struct Chart {
    /// For screen readers.
    pub title: String,
    pub scale: Scale,
    pub bars: Vec<Bar>,
    /// A horizontal line across the plot, with its label.
    pub reference: Option<(f64, String)>,
}

pub fn bar_chart(chart: &Chart) -> String {
    let mut svg = String::new();
    // Writing into a String cannot fail.
    let _ = draw(&mut svg, chart);
    svg
}

fn draw(svg: &mut String, chart: &Chart) -> fmt::Result {
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let highest_bar = chart.bars.iter().filter_map(|b| b.value).fold(0.0, f64::max);
    let reference_fits = |value: f64| highest_bar <= 0.0 || value <= highest_bar * REFERENCE_FIT;
    let highest = match &chart.reference {
        Some((value, _)) if reference_fits(*value) => highest_bar.max(*value),
        _ => highest_bar,
    };
    let (step, top) = axis(chart.scale, highest);
    let y = |value: f64| TOP + plot_height * (1.0 - (value / top).clamp(0.0, 1.0));
    let base = y(0.0);

    write!(
        svg,
        r#"<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" class="chart">"#,
        escape::html(&chart.title)
    )?;
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        horizontal_line(svg, y(tick), r##"stroke="#e7e9ee""##)?;
        text(svg, LEFT - 8.0, y(tick) + 4.0, TICK, &tick_label(chart.scale, tick))?;
        tick += step;
    }

    let slot = plot_width / chart.bars.len().max(1) as f64;
    let bar_width = (slot * 0.6).min(56.0);
    let label_every = chart.bars.len().div_ceil(MAX_LABELS).max(1);
    for (i, bar) in chart.bars.iter().enumerate() {
        let center = LEFT + slot * (i as f64 + 0.5);
        write!(svg, "<g><title>{}</title>", escape::html(&bar.tooltip))?;
        match bar.value {
            Some(value) => {
                // A tiny value still shows as a sliver, so it is not mistaken for a missing one.
                let height = (base - y(value)).max(if value > 0.0 { MIN_BAR } else { 0.0 });
                write!(
                    svg,
                    r#"<rect x="{:.1}" y="{:.1}" width="{bar_width:.1}" height="{height:.1}" rx="3" fill="{}"/>"#,
                    center - bar_width / 2.0,
                    base - height,
                    bar.tone.color()
                )?;
                text(svg, center, base - height - 6.0, LABEL, &bar.note)?;
            }
            None => text(svg, center, base - 6.0, &format!(r#"{LABEL} fill="{}""#, bar.tone.color()), "n/a")?,
        }
        if i % label_every == 0 {
            text(svg, center, base + 17.0, LABEL, &bar.label)?;
            let color = if bar.tone == Tone::Bad { Tone::Bad.color() } else { MUTED };
            text(svg, center, base + 31.0, &format!(r#"{SUBLABEL} fill="{color}""#), &bar.sublabel)?;
        }
        svg.push_str("</g>");
    }
    horizontal_line(svg, base, r##"stroke="#98a2b3""##)?;
    match &chart.reference {
        Some((value, label)) if reference_fits(*value) => {
            horizontal_line(svg, y(*value), r##"stroke="#b42318" stroke-width="1.5" stroke-dasharray="6 4""##)?;
            text(svg, WIDTH - RIGHT, y(*value) - 5.0, REFERENCE, label)?;
        }
        Some((_, label)) => {
            text(svg, WIDTH - RIGHT, TOP - 10.0, REFERENCE, &format!("{label}, above the scale \u{2191}"))?
        }
        None => {}
    }
    svg.push_str("</svg>");
    Ok(())
}

const MUTED: &str = "#667085";
const TICK: &str = r##"text-anchor="end" font-size="11" fill="#667085""##;
const LABEL: &str = r##"text-anchor="middle" font-size="11" fill="#344054""##;
const SUBLABEL: &str = r#"text-anchor="middle" font-size="10""#;
const REFERENCE: &str = r##"text-anchor="end" font-size="11" font-weight="600" fill="#b42318""##;

/// A line across the plot at height `y`.
fn horizontal_line(svg: &mut String, y: f64, style: &str) -> fmt::Result {
    write!(svg, r#"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" {style}/>"#, WIDTH - RIGHT)
}

/// Nothing for empty text; `style` is trusted markup, `content` is escaped.
fn text(svg: &mut String, x: f64, y: f64, style: &str, content: &str) -> fmt::Result {
    if content.is_empty() {
        return Ok(());
    }
    write!(svg, r#"<text x="{x:.1}" y="{y:.1}" {style}>{}</text>"#, escape::html(content))
}

/// A round tick step for values up to `highest`, and the axis top (a whole number of steps, at least one): at
/// most five steps, each a round duration (10m, 1h, 6h, ...) or size (200 MiB, 1 GiB, ...).
fn axis(scale: Scale, highest: f64) -> (f64, f64) {
    const MAX_STEPS: f64 = 5.0;
    let step = match scale {
        Scale::Seconds => {
            const ROUND: [f64; 24] = [
                0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0,
                3600.0, 7200.0, 10_800.0, 21_600.0, 43_200.0, 86_400.0, 172_800.0, 604_800.0,
            ];
            ROUND
                .iter()
                .copied()
                .find(|step| highest / step <= MAX_STEPS)
                .unwrap_or_else(|| (highest / MAX_STEPS / 604_800.0).ceil() * 604_800.0)
        }
        Scale::Bytes => {
            let unit = byte_unit(highest).0;
            let in_units = highest / unit;
            let multiple = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 250.0, 500.0, 1000.0]
                .into_iter()
                .find(|m| in_units / m <= MAX_STEPS)
                .unwrap_or(1024.0);
            multiple * unit
        }
    };
    let steps = (highest / step).ceil().max(1.0);
    (step, steps * step)
}

/// The binary unit the value is best told in: `(bytes per unit, name)`.
fn byte_unit(value: f64) -> (f64, &'static str) {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 1.0;
    let mut index = 0;
    while value >= unit * 1024.0 && index < UNITS.len() - 1 {
        unit *= 1024.0;
        index += 1;
    }
    (unit, UNITS[index])
}

fn tick_label(scale: Scale, value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    match scale {
        Scale::Bytes => {
            let (unit, name) = byte_unit(value);
            let amount = value / unit;
            if amount.fract() == 0.0 { format!("{amount:.0} {name}") } else { format!("{amount:.1} {name}") }
        }
        Scale::Seconds if value < 1.0 => format!("{:.0}ms", value * 1000.0),
        Scale::Seconds if value.fract() != 0.0 => format!("{value:.1}s"),
        Scale::Seconds => {
            let seconds = value.round() as u64;
            match seconds {
                s if s % 86_400 == 0 => format!("{}d", s / 86_400),
                s if s % 3600 == 0 => format!("{}h", s / 3600),
                s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
                s if s % 60 == 0 => format!("{}m", s / 60),
                s => format!("{s}s"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_round_values() {
        assert_eq!(axis(Scale::Seconds, 3000.0), (600.0, 3000.0));
        assert_eq!(axis(Scale::Seconds, 3601.0), (900.0, 4500.0));
        assert_eq!(axis(Scale::Seconds, 0.0), (0.1, 0.1), "an empty chart still has an axis");
        assert_eq!(axis(Scale::Seconds, 0.2), (0.1, 0.2));
        assert_eq!(tick_label(Scale::Seconds, 0.2), "200ms");
        assert_eq!(tick_label(Scale::Seconds, 1.5), "1.5s");
        assert_eq!(axis(Scale::Bytes, 900.0 * 1048576.0), (200.0 * 1048576.0, 1000.0 * 1048576.0));
        assert_eq!(axis(Scale::Bytes, 3.5 * 1073741824.0), (1073741824.0, 4.0 * 1073741824.0));
        assert_eq!(tick_label(Scale::Seconds, 5400.0), "1h30m");
        assert_eq!(tick_label(Scale::Seconds, 7200.0), "2h");
        assert_eq!(tick_label(Scale::Seconds, 600.0), "10m");
        assert_eq!(tick_label(Scale::Bytes, 1536.0), "1.5 KiB");
        assert_eq!(tick_label(Scale::Bytes, 200.0 * 1048576.0), "200 MiB");
    }

    /// The heights of the chart's bars, in pixels.
    fn bar_heights(svg: &str) -> Vec<f64> {
        svg.split("<rect ")
            .skip(1)
            .map(|rect| {
                let height = rect.split("height=\"").nth(1).unwrap().split('"').next().unwrap();
                height.parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn a_tiny_value_against_a_far_objective_keeps_a_readable_bar() {
        let bar = |value: f64| Bar {
            label: String::new(),
            sublabel: String::new(),
            value: Some(value),
            tone: Tone::Good,
            note: String::new(),
            tooltip: String::new(),
        };
        let chart = |bars: Vec<Bar>| Chart {
            title: "RTO".into(),
            scale: Scale::Seconds,
            bars,
            reference: Some((600.0, "objective 10m 00s".into())),
        };
        let plot = HEIGHT - TOP - BOTTOM;
        let tiny = bar_chart(&chart(vec![bar(0.2), bar(0.15)]));
        let heights = bar_heights(&tiny);
        assert!(heights[0] >= plot * 0.9, "the highest bar fills the plot: {heights:?}");
        assert!(heights[1] >= plot * 0.5, "{heights:?}");
        assert!(tiny.contains("objective 10m 00s, above the scale"), "{tiny}");
        assert!(!tiny.contains("stroke-dasharray"), "no line drawn where the objective is not");

        // Close to the objective, the line is drawn where it falls.
        let near = bar_chart(&chart(vec![bar(300.0)]));
        assert!(near.contains("stroke-dasharray") && !near.contains("above the scale"), "{near}");
        assert!(bar_heights(&near)[0] >= plot * 0.4);
    }

    #[test]
    fn labels_are_escaped_and_nothing_is_fetched() {
        let bar = |label: &str| Bar {
            label: label.into(),
            sublabel: String::new(),
            value: Some(10.0),
            tone: Tone::Good,
            note: "<b>".into(),
            tooltip: "a & b".into(),
        };
        let svg = bar_chart(&Chart {
            title: "t".into(),
            scale: Scale::Seconds,
            bars: vec![bar("<script>"), bar("x")],
            reference: Some((5.0, "objective <5s>".into())),
        });
        assert!(!svg.contains("<script") && !svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;") && svg.contains("a &amp; b") && svg.contains("objective &lt;5s&gt;"));
        assert!(!svg.contains("href"), "{svg}");
    }
}
