-- The W3C traceparent of the request that created a saga (NULL when spans were not
-- exported, and for sagas created before this migration). The record itself carries it
-- too; the column lets an operator go from a trace id to its bookings in SQL.
ALTER TABLE sagas ADD COLUMN trace_parent text;
