-- Who resolved a Stripe webhook event held for review (`consofta-billing stripe-reviews resolve` records
-- the operating-system user, `cli:<user>`), beside when and how.
alter table stripe_webhook_reviews add column resolved_by text;
