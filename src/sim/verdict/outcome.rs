//! The verdict's results as enums, written as the lower-case words RFC 8601 `Authentication-Results`
//! uses (`pass`, `softfail`, `temperror`, …).
//!
//! The outbox stores verdicts as JSON and the CLI prints them, so each enum serialises to
//! exactly the string the verdict used to carry (a stored outbox stays readable, and the text
//! output is byte-identical). Each also compares equal to its word (`result == "pass"`), which
//! keeps callers and tests that think in Authentication-Results terms readable.

use serde::{Deserialize, Serialize};

/// An enum whose every variant is one lower-case word: `as_str`, `Display`, and `== "word"`.
macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$m])*
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $word)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The Authentication-Results word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

word_enum! {
    /// One DKIM signature's result (RFC 8601 §2.7.1).
    DkimOutcome {
        Pass => "pass",
        Fail => "fail",
        Neutral => "neutral",
        TempError => "temperror",
        PermError => "permerror",
    }
}

word_enum! {
    /// The SPF result for the envelope sender (RFC 7208 §2.6).
    SpfOutcome {
        Pass => "pass",
        Fail => "fail",
        SoftFail => "softfail",
        Neutral => "neutral",
        None => "none",
        TempError => "temperror",
        PermError => "permerror",
    }
}

word_enum! {
    /// The DMARC result for the header From domain: `none` when there is no record or DMARC does
    /// not apply; the errors when the policy itself could not be evaluated.
    DmarcOutcome {
        Pass => "pass",
        Fail => "fail",
        None => "none",
        TempError => "temperror",
        PermError => "permerror",
    }
}

word_enum! {
    /// A DMARC policy (`p=` / `sp=`), or what a receiver does with the message (the disposition).
    /// `NoRecord` is the empty word: no record applies, so there is no policy to name.
    DmarcPolicy {
        NoRecord => "",
        None => "none",
        Quarantine => "quarantine",
        Reject => "reject",
    }
}

impl From<mail_auth::SpfResult> for SpfOutcome {
    fn from(r: mail_auth::SpfResult) -> Self {
        use mail_auth::SpfResult as R;
        match r {
            R::Pass => SpfOutcome::Pass,
            R::Fail => SpfOutcome::Fail,
            R::SoftFail => SpfOutcome::SoftFail,
            R::Neutral => SpfOutcome::Neutral,
            R::TempError => SpfOutcome::TempError,
            R::PermError => SpfOutcome::PermError,
            R::None => SpfOutcome::None,
        }
    }
}

impl From<mail_auth::dmarc::Policy> for DmarcPolicy {
    /// mail-auth's `Unspecified` (a record without `p=`) is applied as `none` (RFC 9989 §4.10.1).
    fn from(p: mail_auth::dmarc::Policy) -> Self {
        use mail_auth::dmarc::Policy as P;
        match p {
            P::None | P::Unspecified => DmarcPolicy::None,
            P::Quarantine => DmarcPolicy::Quarantine,
            P::Reject => DmarcPolicy::Reject,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant serialises to its word and reads back from it, so outbox JSON written
    /// before results were enums still loads.
    fn round_trip<T>(all: &[T], words: &[&str])
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug + Copy,
        T: std::fmt::Display,
    {
        assert_eq!(all.len(), words.len());
        for (v, w) in all.iter().zip(words) {
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{w}\""));
            assert_eq!(v.to_string(), *w);
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), *v);
        }
    }

    #[test]
    fn words_round_trip() {
        round_trip(
            DkimOutcome::ALL,
            &["pass", "fail", "neutral", "temperror", "permerror"],
        );
        round_trip(
            SpfOutcome::ALL,
            &[
                "pass",
                "fail",
                "softfail",
                "neutral",
                "none",
                "temperror",
                "permerror",
            ],
        );
        round_trip(
            DmarcOutcome::ALL,
            &["pass", "fail", "none", "temperror", "permerror"],
        );
        round_trip(DmarcPolicy::ALL, &["", "none", "quarantine", "reject"]);
        assert!(serde_json::from_str::<DkimOutcome>("\"PASS\"").is_err());
    }

    #[test]
    fn compares_with_words() {
        assert_eq!(DkimOutcome::Pass, "pass");
        assert_ne!(SpfOutcome::SoftFail, "fail");
        assert!(DmarcPolicy::NoRecord == *"");
        assert_eq!(SpfOutcome::from(mail_auth::SpfResult::SoftFail), "softfail");
        assert_eq!(
            DmarcPolicy::from(mail_auth::dmarc::Policy::Unspecified),
            DmarcPolicy::None
        );
    }
}
