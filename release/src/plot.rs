//! A dependency-free SVG scatter plot of the release: bits per weight against mean KL divergence
//! (log scale), one labelled point per type, gate failures in red.

use std::fmt::Write as _;

use crate::summary::Release;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const MARGIN: f64 = 60.0;

/// The plot as an SVG document.
pub fn size_vs_kld(release: &Release) -> String {
    let points: Vec<(f64, f64, &str, bool)> = release
        .types
        .iter()
        .map(|t| {
            let m = &t.measurement;
            (
                m.bpw,
                m.versus_teacher.kld.mean.max(1e-9).log10(),
                t.ftype.as_str(),
                t.verdict.passed,
            )
        })
        .collect();
    let range = |values: Vec<f64>| {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.1).max(0.25);
        (lo - pad, hi + pad)
    };
    let (x0, x1) = range(points.iter().map(|p| p.0).collect());
    let (y0, y1) = range(points.iter().map(|p| p.1).collect());
    let sx = |x: f64| MARGIN + (x - x0) / (x1 - x0) * (WIDTH - 2.0 * MARGIN);
    let sy = |y: f64| HEIGHT - MARGIN - (y - y0) / (y1 - y0) * (HEIGHT - 2.0 * MARGIN);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="24" text-anchor="middle" font-size="14">{}: size vs KL divergence from the teacher</text>"#,
        WIDTH / 2.0,
        escape(&release.name)
    );
    let (left, right, top, bottom) = (MARGIN, WIDTH - MARGIN, MARGIN, HEIGHT - MARGIN);
    let _ = writeln!(
        svg,
        r#"<path d="M{left} {top} V{bottom} H{right}" stroke="black" fill="none"/>"#
    );
    for decade in (y0.ceil() as i32)..=(y1.floor() as i32) {
        let y = sy(decade as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{right}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">1e{decade}</text>"##,
            left - 6.0,
            y + 4.0
        );
    }
    for bpw in (x0.ceil() as i32)..=(x1.floor() as i32) {
        let x = sx(bpw as f64);
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{bpw}</text>"#,
            bottom + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">bits per weight</text><text transform="translate(16 {}) rotate(-90)" text-anchor="middle">mean KLD (log scale)</text>"#,
        WIDTH / 2.0,
        HEIGHT - 16.0,
        HEIGHT / 2.0
    );
    for (x, y, label, passed) in points {
        let color = if passed { "#1a7f37" } else { "#cf222e" };
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/><text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
            sx(x),
            sy(y),
            sx(x) + 6.0,
            sy(y) - 6.0,
            escape(label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
