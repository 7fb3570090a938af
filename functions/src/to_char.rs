//! `to_char(timestamp | timestamptz | date, pattern)` with PostgreSQL's template
//! patterns (`YYYY-MM-DD HH24:MI:SS`, `FMMonth`, `Dy`, `DDTH`, `TZ`, ...).
//!
//! DataFusion's own `to_char` reads the pattern as a chrono format, so
//! `to_char(now(), 'YYYY')` answered `YYYY`: a wrong answer. This one follows
//! PostgreSQL's formatting.c: keywords matched longest first and case-sensitively,
//! `FM` (no padding) and `TM` prefixes, `TH`/`th` ordinal suffixes, double-quoted
//! literal text, every other character copied. A timestamptz is written in the zone
//! its value is tagged with, which `SessionZone` makes the session's. Numbers and
//! intervals are refused (0A000) until they are implemented: never formatted
//! differently.

use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use switchyard_sqlstate::SqlState;

use crate::coded;

/// The `to_char` function; see the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToChar {
    signature: Signature,
}

impl ToChar {
    /// The function.
    pub fn new() -> Self {
        ToChar {
            signature: Signature::any(2, Volatility::Stable),
        }
    }
}

impl Default for ToChar {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        "to_char"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match &args[0] {
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Null => {}
            other => {
                return Err(coded(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!(
                        "to_char of {} is not supported yet (timestamps and dates are)",
                        pg_type_name(other)
                    ),
                ))
            }
        }
        if !matches!(
            args[1],
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
        ) {
            return exec_err!("to_char's pattern must be text");
        }
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let values = args.args[0].to_array(n)?;
        let patterns = args.args[1].to_array(n)?;
        let patterns = datafusion::arrow::compute::cast(&patterns, &DataType::Utf8)?;
        let patterns = patterns.as_string::<i32>();
        let mut out = StringBuilder::with_capacity(n, n * 16);
        // A constant pattern is parsed once.
        let mut parsed: Option<(String, Vec<Node>)> = None;
        for i in 0..n {
            let Some(moment) = moment(&values, i)? else {
                out.append_null();
                continue;
            };
            if patterns.is_null(i) {
                out.append_null();
                continue;
            }
            let pattern = patterns.value(i);
            if parsed.as_ref().is_none_or(|(p, _)| p != pattern) {
                parsed = Some((pattern.to_string(), parse(pattern)));
            }
            let nodes = &parsed.as_ref().expect("parsed above").1;
            out.append_value(format(nodes, &moment));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn pg_type_name(t: &DataType) -> String {
    match t {
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric".into(),
        DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        other => other.to_string(),
    }
}

/// One value to format: its local date and time, and its zone when it has one.
struct Moment {
    local: NaiveDateTime,
    /// Offset from UTC in seconds and the zone's abbreviation, for timestamptz.
    zone: Option<(i32, String)>,
}

fn moment(array: &ArrayRef, i: usize) -> Result<Option<Moment>> {
    let Some(utc) = crate::instant(array, i)? else {
        return Ok(None);
    };
    let zone = match array.data_type() {
        DataType::Timestamp(_, zone) => zone.clone(),
        _ => None,
    };
    Ok(Some(match zone {
        None => Moment {
            local: utc.naive_utc(),
            zone: None,
        },
        Some(z) => {
            let tz: datafusion::arrow::array::timezone::Tz = z.parse()?;
            let local = utc.with_timezone(&tz);
            let offset = local.offset().fix().local_minus_utc();
            Moment {
                local: local.naive_local(),
                zone: Some((offset, abbreviation(&z, utc))),
            }
        }
    }))
}

/// The zone's abbreviation at `at` (`EST`, `CET`, `UTC`), or its offset as
/// PostgreSQL writes one that has none (`+0530`).
fn abbreviation(zone: &str, at: DateTime<chrono::Utc>) -> String {
    use chrono::offset::TimeZone;
    use chrono_tz::OffsetName;
    if let Ok(tz) = zone.parse::<chrono_tz::Tz>() {
        let offset = tz.offset_from_utc_datetime(&at.naive_utc());
        if let Some(a) = offset.abbreviation() {
            return a.to_string();
        }
        let secs = offset.fix().local_minus_utc();
        return compact_offset(secs);
    }
    // A fixed offset such as "+05:30".
    match zone.parse::<datafusion::arrow::array::timezone::Tz>() {
        Ok(tz) => compact_offset(
            tz.offset_from_utc_datetime(&at.naive_utc())
                .fix()
                .local_minus_utc(),
        ),
        Err(_) => zone.to_string(),
    }
}

fn compact_offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let s = secs.abs();
    if s % 3600 == 0 {
        format!("{sign}{:02}", s / 3600)
    } else {
        format!("{sign}{:02}{:02}", s / 3600, (s % 3600) / 60)
    }
}

/// A template pattern, as PostgreSQL's keyword table names them.
// The names are the patterns themselves, so they are upper case.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    ADdot,
    AD,
    AMdot,
    AM,
    BCdot,
    BC,
    CC,
    DayUpper,
    DayCap,
    DayLower,
    DDD,
    DD,
    DyUpper,
    DyCap,
    DyLower,
    D,
    FF(u8),
    FX,
    HH24,
    HH12,
    HH,
    IDDD,
    ID,
    IW,
    IYYY,
    IYY,
    IY,
    I,
    J,
    MI,
    MM,
    MonthUpper,
    MonthCap,
    MonthLower,
    MonUpper,
    MonCap,
    MonLower,
    MS,
    OF,
    PMdot,
    PM,
    Q,
    RMUpper,
    RMLower,
    SSSSS,
    SSSS,
    SS,
    TZH,
    TZM,
    TZUpper,
    TZLower,
    US,
    WW,
    W,
    YCommaYYY,
    YYYY,
    YYY,
    YY,
    Y,
}

/// Keywords, longest first within each spelling (the lower-case spellings mean the
/// same, with lower-case text where the output has letters).
const KEYWORDS: &[(&str, Key, bool)] = &[
    ("A.D.", Key::ADdot, false),
    ("A.M.", Key::AMdot, false),
    ("AD", Key::AD, false),
    ("AM", Key::AM, false),
    ("B.C.", Key::BCdot, false),
    ("BC", Key::BC, false),
    ("CC", Key::CC, false),
    ("DAY", Key::DayUpper, false),
    ("DDD", Key::DDD, false),
    ("DD", Key::DD, false),
    ("DY", Key::DyUpper, false),
    ("Day", Key::DayCap, false),
    ("Dy", Key::DyCap, false),
    ("D", Key::D, false),
    ("FF1", Key::FF(1), false),
    ("FF2", Key::FF(2), false),
    ("FF3", Key::FF(3), false),
    ("FF4", Key::FF(4), false),
    ("FF5", Key::FF(5), false),
    ("FF6", Key::FF(6), false),
    ("FX", Key::FX, false),
    ("HH24", Key::HH24, false),
    ("HH12", Key::HH12, false),
    ("HH", Key::HH, false),
    ("IDDD", Key::IDDD, false),
    ("ID", Key::ID, false),
    ("IW", Key::IW, false),
    ("IYYY", Key::IYYY, false),
    ("IYY", Key::IYY, false),
    ("IY", Key::IY, false),
    ("I", Key::I, false),
    ("J", Key::J, false),
    ("MI", Key::MI, false),
    ("MM", Key::MM, false),
    ("MONTH", Key::MonthUpper, false),
    ("MON", Key::MonUpper, false),
    ("MS", Key::MS, false),
    ("Month", Key::MonthCap, false),
    ("Mon", Key::MonCap, false),
    ("OF", Key::OF, false),
    ("P.M.", Key::PMdot, false),
    ("PM", Key::PM, false),
    ("Q", Key::Q, false),
    ("RM", Key::RMUpper, false),
    ("SSSSS", Key::SSSSS, false),
    ("SSSS", Key::SSSS, false),
    ("SS", Key::SS, false),
    ("TZH", Key::TZH, false),
    ("TZM", Key::TZM, false),
    ("TZ", Key::TZUpper, false),
    ("US", Key::US, false),
    ("WW", Key::WW, false),
    ("W", Key::W, false),
    ("Y,YYY", Key::YCommaYYY, false),
    ("YYYY", Key::YYYY, false),
    ("YYY", Key::YYY, false),
    ("YY", Key::YY, false),
    ("Y", Key::Y, false),
    ("a.d.", Key::ADdot, true),
    ("a.m.", Key::AMdot, true),
    ("ad", Key::AD, true),
    ("am", Key::AM, true),
    ("b.c.", Key::BCdot, true),
    ("bc", Key::BC, true),
    ("cc", Key::CC, true),
    ("day", Key::DayLower, true),
    ("ddd", Key::DDD, true),
    ("dd", Key::DD, true),
    ("dy", Key::DyLower, true),
    ("d", Key::D, true),
    ("ff1", Key::FF(1), true),
    ("ff2", Key::FF(2), true),
    ("ff3", Key::FF(3), true),
    ("ff4", Key::FF(4), true),
    ("ff5", Key::FF(5), true),
    ("ff6", Key::FF(6), true),
    ("fx", Key::FX, true),
    ("hh24", Key::HH24, true),
    ("hh12", Key::HH12, true),
    ("hh", Key::HH, true),
    ("iddd", Key::IDDD, true),
    ("id", Key::ID, true),
    ("iw", Key::IW, true),
    ("iyyy", Key::IYYY, true),
    ("iyy", Key::IYY, true),
    ("iy", Key::IY, true),
    ("i", Key::I, true),
    ("j", Key::J, true),
    ("mi", Key::MI, true),
    ("mm", Key::MM, true),
    ("month", Key::MonthLower, true),
    ("mon", Key::MonLower, true),
    ("ms", Key::MS, true),
    ("of", Key::OF, true),
    ("p.m.", Key::PMdot, true),
    ("pm", Key::PM, true),
    ("q", Key::Q, true),
    ("rm", Key::RMLower, true),
    ("sssss", Key::SSSSS, true),
    ("ssss", Key::SSSS, true),
    ("ss", Key::SS, true),
    ("tzh", Key::TZH, true),
    ("tzm", Key::TZM, true),
    ("tz", Key::TZLower, true),
    ("us", Key::US, true),
    ("ww", Key::WW, true),
    ("w", Key::W, true),
    ("y,yyy", Key::YCommaYYY, true),
    ("yyyy", Key::YYYY, true),
    ("yyy", Key::YYY, true),
    ("yy", Key::YY, true),
    ("y", Key::Y, true),
];

/// A parsed piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Text(String),
    Field {
        key: Key,
        /// Lower-case spelling (am, bc, ...).
        lower: bool,
        /// `FM`: no padding.
        fill: bool,
        /// `TH` (upper) or `th` (lower) ordinal suffix.
        th: Option<bool>,
    },
}

fn parse(pattern: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut text = String::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        // Prefixes: FM (fill mode), TM (translation: our names are English already).
        let mut fill = false;
        let mut probe = rest;
        loop {
            if let Some(r) = probe
                .strip_prefix("FM")
                .or_else(|| probe.strip_prefix("fm"))
            {
                fill = true;
                probe = r;
            } else if let Some(r) = probe
                .strip_prefix("TM")
                .or_else(|| probe.strip_prefix("tm"))
            {
                probe = r;
            } else {
                break;
            }
        }
        if let Some((word, key, lower)) = KEYWORDS.iter().find(|(w, _, _)| probe.starts_with(w)) {
            if !text.is_empty() {
                nodes.push(Node::Text(std::mem::take(&mut text)));
            }
            let mut after = &probe[word.len()..];
            let th = if let Some(r) = after.strip_prefix("TH") {
                after = r;
                Some(true)
            } else if let Some(r) = after.strip_prefix("th") {
                after = r;
                Some(false)
            } else {
                None
            };
            nodes.push(Node::Field {
                key: *key,
                lower: *lower,
                fill,
                th,
            });
            rest = after;
            continue;
        }
        // Not a keyword: the prefixes were text after all.
        let mut chars = rest.chars();
        let c = chars.next().expect("not empty");
        match c {
            '"' => {
                // Quoted text, `\"` for a quote inside it.
                let mut inner = chars.as_str();
                loop {
                    let mut it = inner.chars();
                    match it.next() {
                        None => break,
                        Some('"') => {
                            inner = it.as_str();
                            break;
                        }
                        Some('\\') => match it.next() {
                            Some(q) => {
                                text.push(q);
                                inner = it.as_str();
                            }
                            None => {
                                text.push('\\');
                                inner = it.as_str();
                            }
                        },
                        Some(other) => {
                            text.push(other);
                            inner = it.as_str();
                        }
                    }
                }
                rest = inner;
            }
            '\\' => {
                // A backslash escapes a double quote outside quotes too.
                let r = chars.as_str();
                if let Some(after) = r.strip_prefix('"') {
                    text.push('"');
                    rest = after;
                } else {
                    text.push('\\');
                    rest = r;
                }
            }
            other => {
                text.push(other);
                rest = chars.as_str();
            }
        }
    }
    if !text.is_empty() {
        nodes.push(Node::Text(text));
    }
    nodes
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const ROMAN: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];

fn ordinal(n: i64, upper: bool) -> &'static str {
    let n = n.abs();
    let s = if (11..=13).contains(&(n % 100)) {
        "th"
    } else {
        match n % 10 {
            1 => "st",
            2 => "nd",
            3 => "rd",
            _ => "th",
        }
    };
    if upper {
        match s {
            "st" => "ST",
            "nd" => "ND",
            "rd" => "RD",
            _ => "TH",
        }
    } else {
        s
    }
}

fn format(nodes: &[Node], m: &Moment) -> String {
    let mut out = String::new();
    let t = &m.local;
    // PostgreSQL shows BC years as positive numbers with a BC marker.
    let astro = t.year();
    let year = if astro <= 0 { 1 - astro } else { astro };
    for node in nodes {
        let (key, lower, fill, th) = match node {
            Node::Text(s) => {
                out.push_str(s);
                continue;
            }
            Node::Field {
                key,
                lower,
                fill,
                th,
            } => (*key, *lower, *fill, *th),
        };
        let num = |value: i64, width: usize| -> (String, Option<i64>) {
            if fill {
                (value.to_string(), Some(value))
            } else if value < 0 {
                (format!("-{:0width$}", -value, width = width), Some(value))
            } else {
                (format!("{value:0width$}"), Some(value))
            }
        };
        let word = |w: &str, width: usize| -> (String, Option<i64>) {
            if fill {
                (w.to_string(), None)
            } else {
                (format!("{w:<width$}"), None)
            }
        };
        let hour12 = match t.hour() % 12 {
            0 => 12,
            h => h,
        };
        let pm = t.hour() >= 12;
        let marker = |up: &str, down: &str| -> (String, Option<i64>) {
            (if lower { down } else { up }.to_string(), None)
        };
        let (text, numeric) = match key {
            Key::HH | Key::HH12 => num(i64::from(hour12), 2),
            Key::HH24 => num(i64::from(t.hour()), 2),
            Key::MI => num(i64::from(t.minute()), 2),
            Key::SS => num(i64::from(t.second()), 2),
            Key::MS => num(i64::from(t.nanosecond() / 1_000_000), 3),
            Key::US => num(i64::from(t.nanosecond() / 1_000), 6),
            Key::FF(n) => {
                let micros = t.nanosecond() / 1_000;
                let digits = format!("{micros:06}");
                (digits[..usize::from(n)].to_string(), None)
            }
            Key::SSSS | Key::SSSSS => (
                i64::from(t.num_seconds_from_midnight()).to_string(),
                Some(i64::from(t.num_seconds_from_midnight())),
            ),
            Key::AM | Key::PM => {
                if pm {
                    marker("PM", "pm")
                } else {
                    marker("AM", "am")
                }
            }
            Key::AMdot | Key::PMdot => {
                if pm {
                    marker("P.M.", "p.m.")
                } else {
                    marker("A.M.", "a.m.")
                }
            }
            Key::AD | Key::BC => {
                if astro <= 0 {
                    marker("BC", "bc")
                } else {
                    marker("AD", "ad")
                }
            }
            Key::ADdot | Key::BCdot => {
                if astro <= 0 {
                    marker("B.C.", "b.c.")
                } else {
                    marker("A.D.", "a.d.")
                }
            }
            Key::YCommaYYY => {
                let y = i64::from(year);
                (format!("{},{:03}", y / 1000, y % 1000), Some(y))
            }
            Key::YYYY => num(i64::from(year), 4),
            Key::YYY => num(i64::from(year % 1000), 3),
            Key::YY => num(i64::from(year % 100), 2),
            Key::Y => num(i64::from(year % 10), 1),
            Key::IYYY | Key::IYY | Key::IY | Key::I => {
                let iso = t.iso_week().year();
                let iso = if iso <= 0 { 1 - iso } else { iso };
                match key {
                    Key::IYYY => num(i64::from(iso), 4),
                    Key::IYY => num(i64::from(iso % 1000), 3),
                    Key::IY => num(i64::from(iso % 100), 2),
                    _ => num(i64::from(iso % 10), 1),
                }
            }
            Key::CC => {
                let cc = if astro > 0 {
                    (astro + 99) / 100
                } else {
                    -((99 - (astro - 1)) / 100)
                };
                num(i64::from(cc), 2)
            }
            Key::MonthUpper => word(&MONTHS[t.month0() as usize].to_uppercase(), 9),
            Key::MonthCap => word(MONTHS[t.month0() as usize], 9),
            Key::MonthLower => word(&MONTHS[t.month0() as usize].to_lowercase(), 9),
            Key::MonUpper => (MONTHS[t.month0() as usize][..3].to_uppercase(), None),
            Key::MonCap => (MONTHS[t.month0() as usize][..3].to_string(), None),
            Key::MonLower => (MONTHS[t.month0() as usize][..3].to_lowercase(), None),
            Key::MM => num(i64::from(t.month()), 2),
            Key::DayUpper => word(
                &DAYS[t.weekday().num_days_from_sunday() as usize].to_uppercase(),
                9,
            ),
            Key::DayCap => word(DAYS[t.weekday().num_days_from_sunday() as usize], 9),
            Key::DayLower => word(
                &DAYS[t.weekday().num_days_from_sunday() as usize].to_lowercase(),
                9,
            ),
            Key::DyUpper => (
                DAYS[t.weekday().num_days_from_sunday() as usize][..3].to_uppercase(),
                None,
            ),
            Key::DyCap => (
                DAYS[t.weekday().num_days_from_sunday() as usize][..3].to_string(),
                None,
            ),
            Key::DyLower => (
                DAYS[t.weekday().num_days_from_sunday() as usize][..3].to_lowercase(),
                None,
            ),
            Key::DDD => num(i64::from(t.ordinal()), 3),
            Key::IDDD => {
                let week = t.iso_week();
                let day = (week.week() - 1) * 7 + t.weekday().number_from_monday();
                num(i64::from(day), 3)
            }
            Key::DD => num(i64::from(t.day()), 2),
            Key::D => num(i64::from(t.weekday().number_from_sunday()), 1),
            Key::ID => num(i64::from(t.weekday().number_from_monday()), 1),
            Key::W => num(i64::from((t.day() - 1) / 7 + 1), 1),
            Key::WW => num(i64::from((t.ordinal() - 1) / 7 + 1), 2),
            Key::IW => num(i64::from(t.iso_week().week()), 2),
            Key::J => {
                // Julian day: days since 4714-11-24 BC (proleptic Gregorian).
                let epoch = NaiveDate::from_ymd_opt(-4713, 11, 24).expect("valid date");
                let j = t.date().signed_duration_since(epoch).num_days();
                (j.to_string(), Some(j))
            }
            Key::Q => num(i64::from((t.month() - 1) / 3 + 1), 1),
            Key::RMUpper => word(ROMAN[t.month0() as usize], 4),
            Key::RMLower => word(&ROMAN[t.month0() as usize].to_lowercase(), 4),
            Key::TZUpper | Key::TZLower => {
                let a = m.zone.as_ref().map(|(_, a)| a.clone()).unwrap_or_default();
                (if lower { a.to_lowercase() } else { a }, None)
            }
            // A timestamp without zone has offset 0 here, as in PostgreSQL.
            Key::TZH => {
                let secs = m.zone.as_ref().map_or(0, |(s, _)| *s);
                let sign = if secs < 0 { '-' } else { '+' };
                (format!("{sign}{:02}", secs.abs() / 3600), None)
            }
            Key::TZM => {
                let secs = m.zone.as_ref().map_or(0, |(s, _)| *s);
                num(i64::from((secs.abs() % 3600) / 60), 2)
            }
            Key::OF => {
                let secs = m.zone.as_ref().map_or(0, |(s, _)| *s);
                let sign = if secs < 0 { '-' } else { '+' };
                let s = secs.abs();
                let mut text = format!("{sign}{:02}", s / 3600);
                if s % 3600 != 0 {
                    text.push_str(&format!(":{:02}", (s % 3600) / 60));
                }
                (text, None)
            }
            Key::FX => (String::new(), None),
        };
        out.push_str(&text);
        if let (Some(upper), Some(n)) = (th, numeric) {
            out.push_str(ordinal(n, upper));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, zone: Option<(&str, i32)>) -> Moment {
        Moment {
            local: NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap(),
            zone: zone.map(|(a, o)| (o, a.to_string())),
        }
    }

    fn f(pattern: &str, m: &Moment) -> String {
        format(&parse(pattern), m)
    }

    /// Each expected value is what PostgreSQL 15 answers for the same pattern.
    #[test]
    fn patterns_format_as_postgresql_formats_them() {
        let m = at("2026-03-07 14:05:09.123456", Some(("EST", -5 * 3600)));
        assert_eq!(f("YYYY", &m), "2026");
        assert_eq!(f("YYYY-MM-DD HH24:MI:SS", &m), "2026-03-07 14:05:09");
        assert_eq!(f("HH12:MI AM", &m), "02:05 PM");
        assert_eq!(f("FMHH12:MI am", &m), "2:05 pm");
        assert_eq!(f("Month", &m), "March    ");
        assert_eq!(f("FMMonth", &m), "March");
        assert_eq!(f("MONTH|Mon|mon", &m), "MARCH    |Mar|mar");
        assert_eq!(f("Day, DD", &m), "Saturday , 07");
        assert_eq!(f("FMDay, FMDDth", &m), "Saturday, 7th");
        assert_eq!(f("DDTH", &m), "07TH");
        assert_eq!(f("Dy dy DY", &m), "Sat sat SAT");
        assert_eq!(f("MS US FF3", &m), "123 123456 123");
        assert_eq!(f("TZ tz OF TZH:TZM", &m), "EST est -05 -05:00");
        assert_eq!(f("\"Year\" YYYY \"is\" Q", &m), "Year 2026 is 1");
        assert_eq!(f("DDD IW ID D W WW", &m), "066 10 6 7 1 10");
        assert_eq!(f("Y,YYY YYY YY Y CC", &m), "2,026 026 26 6 21");
        assert_eq!(f("RM rm", &m), "III  iii ");
        assert_eq!(f("J", &m), "2461107");
        assert_eq!(f("SSSS", &m), "50709");
        assert_eq!(f("BC AD b.c.", &m), "AD AD a.d.");
        assert_eq!(f("IYYY-IW", &m), "2026-10");
        // Characters that are not patterns are copied.
        assert_eq!(f("x% /k", &m), "x% /k");
        let naive = at("0001-01-01 00:00:00", None);
        assert_eq!(f("TZ|OF", &naive), "|+00");
        let kolkata = at("2026-01-01 06:07:00", Some(("IST", 19800)));
        assert_eq!(f("OF TZH TZM", &kolkata), "+05:30 +05 30");
        assert_eq!(f("1st", &kolkata), "1st");
    }
}
