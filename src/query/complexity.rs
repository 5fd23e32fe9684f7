//! A bound on how deeply nested a query's expressions can be, checked on
//! the SQL text before anything parses it into a tree.
//!
//! The SQL parser limits parenthesised nesting, but a chain of infix
//! operators (`a + b + c + ...`, `x = 1 OR x = 2 OR ...`) parses into a
//! tree as deep as the chain is long, and planning, optimising and dropping
//! such a tree recurse once per level: a few thousand levels overflow a
//! thread's stack and abort the whole server. So the operator tokens of a
//! query are counted first (an upper bound on a chain's depth) and a query
//! with more than [`MAX_OPERATORS`] is refused with a clear error. Literals,
//! identifiers, commas and parentheses do not count: long `IN (...)` lists,
//! wide SELECT lists and big VALUES are fine.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::QueryError;

/// Operator tokens one query may hold: an OR chain of ~1000 comparisons.
/// The binary's thread stacks (see `main.rs`) fit this depth with room.
pub const MAX_OPERATORS: usize = 2000;

pub fn check(sql: &str) -> Result<(), QueryError> {
    // An untokenizable text is left to the parser, which explains better.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let operators = tokens.iter().filter(|t| deepens(t)).count();
    if operators > MAX_OPERATORS {
        return Err(QueryError::Invalid(format!(
            "query too complex: {operators} operators, more than the {MAX_OPERATORS} allowed; \
             use IN (...) lists instead of long OR chains"
        )));
    }
    Ok(())
}

/// Whether a token can add a level to an expression tree. Unknown tokens
/// count, so the bound errs on the safe side.
fn deepens(t: &Token) -> bool {
    match t {
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::COLLATE
                | Keyword::DIV
                | Keyword::AT
        ),
        Token::EOF
        | Token::Whitespace(_)
        | Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::SemiColon
        | Token::Period
        | Token::Number(..)
        | Token::Char(_)
        | Token::Placeholder(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize, op: &str) -> String {
        format!(
            "SELECT * FROM metrics WHERE {}",
            vec!["value = 1"; n].join(op)
        )
    }

    #[test]
    fn long_operator_chains_are_refused_wide_lists_are_not() {
        assert!(check(&chain(400, " OR ")).is_ok());
        let err = check(&chain(5000, " OR ")).unwrap_err();
        assert!(err.to_string().contains("too complex"), "{err}");
        let sum = format!("SELECT {}", vec!["1"; 5000].join("+"));
        assert!(check(&sum).is_err());
        let in_list: Vec<String> = (0..50_000).map(|i| format!("'h{i}'")).collect();
        let sql = format!(
            "SELECT * FROM metrics WHERE tags['host'] IN ({})",
            in_list.join(", ")
        );
        assert!(check(&sql).is_ok());
    }
}
