//! Property tests for `--from-summary` parsing: any text gives arms or a positioned
//! error (never a panic), and summaries written out in either form read back the
//! same.

use proptest::prelude::*;
use tenure_stats::{ArmData, StatsError, parse_summary};

fn arms() -> impl Strategy<Value = Vec<(u64, u64)>> {
    proptest::collection::vec((0u64..1_000_000).prop_flat_map(|u| (Just(u), 0..=u)), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        match parse_summary(&text) {
            Ok(arms) => prop_assert!(!arms.is_empty()),
            Err(StatsError::Parse(e)) => prop_assert!(e.line >= 1 && e.column >= 1),
            Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
        }
    }

    #[test]
    fn near_miss_json_never_panics(text in r#"[\[\]{}",:0-9a-z \n.e+\-\\]{0,80}"#) {
        let _ = parse_summary(&text);
        let _ = parse_summary(&format!("[{text}"));
    }

    #[test]
    fn csv_and_json_round_trip(rows in arms()) {
        let mut csv = String::from("arm,users,conversions\n");
        let mut json = Vec::new();
        for (i, (users, conversions)) in rows.iter().enumerate() {
            csv.push_str(&format!("arm{i},{users},{conversions}\n"));
            json.push(format!(r#"{{"arm": "arm{i}", "users": {users}, "conversions": {conversions}}}"#));
        }
        let json = format!("[{}]", json.join(",\n"));
        let from_csv = parse_summary(&csv).unwrap();
        let from_json = parse_summary(&json).unwrap();
        prop_assert_eq!(&from_csv, &from_json);
        for (arm, (users, conversions)) in from_csv.iter().zip(&rows) {
            prop_assert_eq!(&arm.data, &ArmData::Proportion { users: *users, conversions: *conversions });
        }
    }

    #[test]
    fn mean_summaries_round_trip(n in 2u64..100_000, mu in -1e3f64..1e3, sd in 0.001f64..1e3) {
        let nf = n as f64;
        let sum = mu * nf;
        let sum_squares = sd * sd * (nf - 1.0) + sum * sum / nf;
        let csv = format!("arm,users,sum,sum_squares\nA,{n},{sum:?},{sum_squares:?}\n");
        let arms = parse_summary(&csv).unwrap();
        prop_assert_eq!(&arms[0].data, &ArmData::Mean { n, sum, sum_squares });
    }
}
