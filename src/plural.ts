/**
 * A count with its noun in agreement: `plural(1, 'record')` is `1 record`, `plural(0, 'record')`
 * `0 records`. Irregular plurals, and a verb that agrees with the count, go in `pluralForm`:
 * `plural(n, 'entry', 'entries')`, `plural(n, 'record was', 'records were')`. Every count in a log
 * line or CLI message goes through it, so none says "1 records".
 */
export function plural(count: number, noun: string, pluralForm = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : pluralForm}`;
}
