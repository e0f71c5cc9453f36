//! The catalogue validation as it was before the tables (serde's derive through
//! `serde_path_to_error`, then per-type checks), kept verbatim for tests only: the oracle the
//! table-driven validation ([`crate::shape`]) is compared with.

use super::*;

pub(crate) trait Check {
    fn check(&self) -> Result<(), ValidationError>;
}

pub(crate) fn parse_data<T: EventData + Check>(data: &RawJson) -> Result<(), ValidationError> {
    if !data.get().trim_start().starts_with('{') {
        return Err(ValidationError::new(
            "data",
            ValidationKind::WrongType,
            format!("data of `{}` must be a JSON object", T::TYPE),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(data.get());
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        let msg = text.split(" at line ").next().unwrap_or(&text).to_owned();
        if let Some(rest) = msg.strip_prefix("missing field `") {
            let field = rest.trim_end_matches('`');
            let full = if path == "." {
                format!("data.{field}")
            } else {
                format!("data.{path}.{field}")
            };
            return ValidationError::new(
                full,
                ValidationKind::Missing,
                format!("`{field}` is required for `{}`", T::TYPE),
            );
        }
        let field = if path == "." {
            "data".to_owned()
        } else {
            format!("data.{path}")
        };
        ValidationError::new(
            field,
            ValidationKind::WrongType,
            format!("{msg} (in `{}` data)", T::TYPE),
        )
    })?;
    value.check()
}

fn required(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        Err(ValidationError::new(
            format!("data.{field}"),
            ValidationKind::Missing,
            format!("`{field}` must not be empty"),
        ))
    } else {
        check_optional_text(&format!("data.{field}"), Some(value))
    }
}

fn percent(field: &str, value: f64) -> Result<(), ValidationError> {
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::new(
            format!("data.{field}"),
            ValidationKind::OutOfRange,
            format!("`{field}` is {value}; it must be between 0 and 100"),
        ))
    }
}

impl Decimal {
    fn check(&self, field: &str) -> Result<(), ValidationError> {
        let s = self.0.strip_prefix('-').unwrap_or(&self.0);
        let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if digits(int) && digits(frac) && self.0.len() <= 64 {
            Ok(())
        } else {
            Err(ValidationError::new(
                format!("data.{field}"),
                ValidationKind::BadFormat,
                format!("`{field}` is `{}`; decimals are strings", self.0),
            ))
        }
    }

    fn check_positive(&self, field: &str) -> Result<(), ValidationError> {
        self.check(field)?;
        if self.0.starts_with('-') || self.0.bytes().all(|b| b == b'0' || b == b'.') {
            return Err(ValidationError::new(
                format!("data.{field}"),
                ValidationKind::OutOfRange,
                format!("`{field}` is `{}`; it must be greater than zero", self.0),
            ));
        }
        Ok(())
    }
}

macro_rules! check {
    ($($name:ident($s:ident) $body:block)*) => {
        $(impl Check for $name {
            fn check(&self) -> Result<(), ValidationError> {
                let $s = self;
                $body
            }
        })*
    };
}

check! {
    StrategyGenerationStarted(s) { required("generation_id", &s.generation_id) }
    StrategyGenerationProgress(s) { required("generation_id", &s.generation_id)?; percent("percent", s.percent) }
    StrategyGenerationCompleted(s) { required("generation_id", &s.generation_id)?; required("strategy_id", &s.strategy_id) }
    StrategyGenerationFailed(s) { required("generation_id", &s.generation_id)?; required("error", &s.error) }
    BacktestStarted(s) { required("backtest_id", &s.backtest_id)?; required("strategy_id", &s.strategy_id) }
    BacktestProgress(s) { required("backtest_id", &s.backtest_id)?; percent("percent", s.percent) }
    BacktestCompleted(s) {
        required("backtest_id", &s.backtest_id)?;
        if let Some(d) = &s.total_return { d.check("total_return")?; }
        if let Some(d) = &s.max_drawdown { d.check("max_drawdown")?; }
        Ok(())
    }
    BacktestFailed(s) { required("backtest_id", &s.backtest_id)?; required("error", &s.error) }
    TradeExecuted(s) {
        required("trade_id", &s.trade_id)?;
        required("symbol", &s.symbol)?;
        s.quantity.check_positive("quantity")?;
        s.price.check_positive("price")
    }
    OrderPlaced(s) {
        required("order_id", &s.order_id)?;
        required("symbol", &s.symbol)?;
        s.quantity.check_positive("quantity")?;
        if let Some(p) = &s.price { p.check_positive("price")?; }
        Ok(())
    }
    OrderFilled(s) {
        required("order_id", &s.order_id)?;
        required("symbol", &s.symbol)?;
        s.filled_quantity.check_positive("filled_quantity")?;
        s.average_price.check_positive("average_price")
    }
    OrderCancelled(s) { required("order_id", &s.order_id) }
    PositionUpdated(s) {
        required("symbol", &s.symbol)?;
        s.quantity.check("quantity")?;
        s.average_price.check("average_price")?;
        if let Some(d) = &s.unrealized_pnl { d.check("unrealized_pnl")?; }
        if let Some(d) = &s.realized_pnl { d.check("realized_pnl")?; }
        Ok(())
    }
    ForgeJobStarted(s) { required("job_id", &s.job_id) }
    ForgeJobProgress(s) { required("job_id", &s.job_id)?; percent("percent", s.percent) }
    ForgeJobCompleted(s) { required("job_id", &s.job_id) }
    ForgeJobFailed(s) { required("job_id", &s.job_id)?; required("error", &s.error) }
}
