/// A serde `rename_all` rule, applied to field names so that the wire names a
/// model's schema records are exactly the keys serde writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameRule {
    /// `"lowercase"`
    Lower,
    /// `"UPPERCASE"`
    Upper,
    /// `"PascalCase"`
    Pascal,
    /// `"camelCase"`
    Camel,
    /// `"snake_case"`
    Snake,
    /// `"SCREAMING_SNAKE_CASE"`
    ScreamingSnake,
    /// `"kebab-case"`
    Kebab,
    /// `"SCREAMING-KEBAB-CASE"`
    ScreamingKebab,
}

impl RenameRule {
    /// Every rule with the spelling serde accepts for it.
    pub const ALL: &'static [(&'static str, RenameRule)] = &[
        ("lowercase", RenameRule::Lower),
        ("UPPERCASE", RenameRule::Upper),
        ("PascalCase", RenameRule::Pascal),
        ("camelCase", RenameRule::Camel),
        ("snake_case", RenameRule::Snake),
        ("SCREAMING_SNAKE_CASE", RenameRule::ScreamingSnake),
        ("kebab-case", RenameRule::Kebab),
        ("SCREAMING-KEBAB-CASE", RenameRule::ScreamingKebab),
    ];

    /// Parses serde's spelling of a rule.
    pub fn parse(spelling: &str) -> Option<RenameRule> {
        RenameRule::ALL
            .iter()
            .find(|(name, _)| *name == spelling)
            .map(|(_, rule)| *rule)
    }

    /// Applies the rule to a snake_case Rust field name (a leading `r#` is dropped).
    ///
    /// ```
    /// use sync_schema::RenameRule;
    /// assert_eq!(RenameRule::Camel.apply_to_field("is_completed"), "isCompleted");
    /// assert_eq!(RenameRule::ScreamingKebab.apply_to_field("due_at"), "DUE-AT");
    /// ```
    pub fn apply_to_field(self, field: &str) -> String {
        let field = field.strip_prefix("r#").unwrap_or(field);
        match self {
            RenameRule::Lower | RenameRule::Snake => field.to_owned(),
            RenameRule::Upper | RenameRule::ScreamingSnake => field.to_ascii_uppercase(),
            RenameRule::Kebab => field.replace('_', "-"),
            RenameRule::ScreamingKebab => field.to_ascii_uppercase().replace('_', "-"),
            RenameRule::Pascal => to_pascal(field),
            RenameRule::Camel => {
                let pascal = to_pascal(field);
                let mut chars = pascal.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                    None => pascal,
                }
            }
        }
    }

    /// Converts a struct name (PascalCase) to snake_case, used for the default `model_type`.
    ///
    /// ```
    /// use sync_schema::RenameRule;
    /// assert_eq!(RenameRule::snake_case_of_type("TodoItem"), "todo_item");
    /// assert_eq!(RenameRule::snake_case_of_type("HTTPLog"), "h_t_t_p_log");
    /// ```
    pub fn snake_case_of_type(name: &str) -> String {
        let mut out = String::with_capacity(name.len() + 4);
        for (i, ch) in name.chars().enumerate() {
            if ch.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_lowercase());
            } else {
                out.push(ch);
            }
        }
        out
    }
}

fn to_pascal(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper_next = true;
    for ch in field.chars() {
        if ch == '_' {
            upper_next = true;
        } else if upper_next {
            out.push(ch.to_ascii_uppercase());
            upper_next = false;
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_on_a_two_word_field() {
        let expected = [
            (RenameRule::Lower, "due_at"),
            (RenameRule::Upper, "DUE_AT"),
            (RenameRule::Pascal, "DueAt"),
            (RenameRule::Camel, "dueAt"),
            (RenameRule::Snake, "due_at"),
            (RenameRule::ScreamingSnake, "DUE_AT"),
            (RenameRule::Kebab, "due-at"),
            (RenameRule::ScreamingKebab, "DUE-AT"),
        ];
        for (rule, wire) in expected {
            assert_eq!(rule.apply_to_field("due_at"), wire, "{rule:?}");
        }
    }

    #[test]
    fn parse_accepts_serde_spellings_only() {
        for (spelling, rule) in RenameRule::ALL {
            assert_eq!(RenameRule::parse(spelling), Some(*rule));
        }
        assert_eq!(RenameRule::parse("camelcase"), None);
        assert_eq!(RenameRule::parse(""), None);
    }

    #[test]
    fn raw_identifiers_lose_their_prefix() {
        assert_eq!(RenameRule::Snake.apply_to_field("r#type"), "type");
        assert_eq!(RenameRule::Camel.apply_to_field("r#type_name"), "typeName");
    }

    #[test]
    fn single_word_and_type_names() {
        assert_eq!(RenameRule::Camel.apply_to_field("title"), "title");
        assert_eq!(RenameRule::Pascal.apply_to_field("title"), "Title");
        assert_eq!(RenameRule::snake_case_of_type("Todo"), "todo");
    }
}
