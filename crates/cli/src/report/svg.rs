//! SVG drawing for the report: an opening tag, text, colour scales, axes
//! ticks, a line chart and horizontal bars. Every string drawn goes through
//! [`esc`].

use std::fmt::Write as _;

use super::esc;

// ---- SVG helpers ----

/// A blue for a share in 0..=1 (light to dark), and the text colour on it.
pub(super) fn blue(x: f64) -> (String, &'static str) {
    let x = x.clamp(0.0, 1.0).sqrt();
    let lerp = |a: f64, b: f64| (a + (b - a) * x).round() as u8;
    let c = format!(
        "#{:02x}{:02x}{:02x}",
        lerp(239.0, 8.0),
        lerp(246.0, 48.0),
        lerp(255.0, 107.0)
    );
    (c, if x > 0.55 { "#fff" } else { "#1b1f24" })
}

pub(super) const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

pub(super) fn svg_open(out: &mut String, w: f64, h: f64, label: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
         viewBox=\"0 0 {w:.0} {h:.0}\" role=\"img\" aria-label=\"{}\" \
         font-family=\"system-ui,sans-serif\" font-size=\"11\">",
        esc(label)
    );
}

pub(super) fn svg_text(out: &mut String, x: f64, y: f64, anchor: &str, fill: &str, s: &str) {
    let _ = write!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" fill=\"{fill}\">{}</text>",
        esc(s)
    );
}

/// Round axis maximum and tick step for values up to `max`.
pub(super) fn nice(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let mag = 10f64.powf(max.log10().floor());
    let step = [0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|s| s * mag)
        .find(|s| max / s <= 5.0)
        .unwrap_or(mag * 10.0);
    ((max / step).ceil() * step, step)
}

pub(super) fn short(x: f64) -> String {
    if x.abs() >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x.abs() >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

// ---- line chart (LTV curves) ----

pub(super) struct Series {
    pub(super) name: String,
    pub(super) points: Vec<(f64, f64)>,
    pub(super) bold: bool,
}

pub(super) fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (560.0, 320.0, 56.0, 130.0, 16.0, 40.0);
    let max_x = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let max_y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let (ymax, ystep) = nice(max_y);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let sx = |x: f64| left + pw * x / max_x;
    let sy = |y: f64| top + ph * (1.0 - y / ymax);
    let mut out = String::new();
    svg_open(&mut out, w, h, title);
    let mut t = 0.0;
    while t <= ymax + 1e-9 {
        let y = sy(t);
        let _ = write!(
            out,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e8eb\"/>",
            left + pw
        );
        svg_text(&mut out, left - 4.0, y + 4.0, "end", "#555", &short(t));
        t += ystep;
    }
    let xstep = (max_x / 12.0).ceil().max(1.0);
    let mut x = 0.0;
    while x <= max_x + 1e-9 {
        svg_text(
            &mut out,
            sx(x),
            top + ph + 14.0,
            "middle",
            "#555",
            &short(x),
        );
        x += xstep;
    }
    let _ = write!(
        out,
        "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#555\"/>",
        left + pw,
        top + ph,
        top + ph
    );
    svg_text(
        &mut out,
        left + pw / 2.0,
        h - 6.0,
        "middle",
        "#555",
        x_label,
    );
    let _ = write!(
        out,
        "<text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
        top + ph / 2.0,
        top + ph / 2.0,
        esc(y_label)
    );
    let mut legend_y = top + 8.0;
    let mut color_i = 0;
    for s in series {
        let (color, width) = if s.bold {
            ("#1b1f24", 3.0)
        } else {
            color_i += 1;
            (PALETTE[(color_i - 1) % PALETTE.len()], 1.5)
        };
        if s.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\" points=\"{}\"><title>{}</title></polyline>",
            pts.join(" "),
            esc(&s.name)
        );
        if legend_y < h - bottom {
            let lx = left + pw + 10.0;
            let _ = write!(
                out,
                "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"{width}\"/>",
                lx + 16.0,
                legend_y - 4.0,
                legend_y - 4.0
            );
            svg_text(&mut out, lx + 20.0, legend_y, "start", "#1b1f24", &s.name);
            legend_y += 14.0;
        }
    }
    out.push_str("</svg>");
    out
}

// ---- horizontal bars (stages, segments) ----

pub(super) fn bars(items: &[(String, f64)], title: &str) -> String {
    let max = items.iter().map(|i| i.1).fold(0.0f64, f64::max).max(1.0);
    let (left, bar_w, bh) = (170.0, 300.0, 20.0);
    let h = 8.0 + bh * items.len() as f64;
    let mut out = String::new();
    svg_open(&mut out, left + bar_w + 70.0, h, title);
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 4.0 + bh * i as f64;
        svg_text(
            &mut out,
            left - 6.0,
            y + 14.0,
            "end",
            "#1b1f24",
            &clip(label, 26),
        );
        let w = bar_w * v / max;
        let _ = write!(
            out,
            "<rect x=\"{left}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"#1f77b4\"><title>{}</title></rect>",
            bh - 4.0,
            esc(&format!("{label}: {}", short(*v)))
        );
        svg_text(
            &mut out,
            left + w + 4.0,
            y + 14.0,
            "start",
            "#1b1f24",
            &short(*v),
        );
    }
    out.push_str("</svg>");
    out
}

/// At most `n` characters, with an ellipsis when cut (the full text stays in
/// the table and the bar's tooltip).
pub(super) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes() {
        assert_eq!(nice(0.0), (1.0, 0.25));
        assert_eq!(nice(7.3), (8.0, 2.0));
        assert_eq!(nice(96.0), (100.0, 20.0));
    }
}
