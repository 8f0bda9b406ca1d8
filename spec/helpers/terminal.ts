import { StringDecoder } from 'node:string_decoder';

/** Where the cursor is: a row of the screen (0 is the first ever written) and a column (0-based). */
export interface Cursor {
  readonly row: number;
  readonly col: number;
}

/** A terminal screen, as {@link terminal} keeps it. */
export interface Terminal {
  /** Interprets what a program wrote to the terminal (text and control sequences). */
  write(chunk: string | Uint8Array): void;
  /**
   * The rows on screen, each without its trailing blanks, down to the last row that holds something
   * or the cursor's row, whichever is lower.
   */
  rows(): string[];
  readonly cursor: Cursor;
}

/** One control sequence or one character: CSI with its parameters, another escape, or a code point. */
const TOKEN = new RegExp(String.raw`\x1b\[([0-9;?]*)([\x40-\x7e])|\x1b|[\s\S]`, 'gu');

/**
 * Just enough of a terminal (xterm's behaviour) to check what readline and the console draw: text at
 * the cursor, wrapping at `columns`; `\r`; `\n` as a tty with `onlcr` (output processing, left on in
 * raw mode) turns it into `\r\n`; the CSI sequences `n A/B/C/D` (cursor up/down/right/left), `n G`
 * (to column n), `K` (erase in line: 0 to its end, 1 to its start, 2 all) and `J` (0: erase below).
 *
 * Like xterm, a character written in the last column leaves the cursor there with a wrap pending: the
 * next character goes to the start of the next row, while `\r`, `\n` or a cursor move cancel it
 * (readline relies on this, writing a space after a line that fills its last row). The screen has no
 * bottom: rows are added below, as a terminal scrolls, and the cursor moves up to the first row at
 * most. Every character is one column wide (the specs write none of the wide ones).
 *
 * @throws {Error} from `write`, on a control character or escape sequence it does not know, so a spec
 *   notices output it cannot check rather than passing on a wrong screen.
 */
export function terminal(columns: number): Terminal {
  if (!Number.isInteger(columns) || columns < 1) throw new RangeError(`terminal: columns ${columns}`);
  const screen: string[][] = [];
  const decoder = new StringDecoder('utf8');
  let row = 0;
  let col = 0;
  let wrapPending = false;
  const line = (at: number): string[] => {
    while (screen.length <= at) screen.push([]);
    return screen[at]!;
  };
  const put = (char: string): void => {
    if (wrapPending) {
      row++;
      col = 0;
      wrapPending = false;
    }
    const cells = line(row);
    while (cells.length < col) cells.push(' ');
    cells[col] = char;
    if (col === columns - 1) wrapPending = true;
    else col++;
  };
  const csi = (params: string, final: string): void => {
    const n = params === '' ? undefined : Number(params);
    if (n !== undefined && !Number.isInteger(n))
      throw new Error(`terminal: unknown sequence CSI ${params}${final}`);
    wrapPending = false;
    switch (final) {
      case 'A':
        row = Math.max(0, row - (n || 1));
        return;
      case 'B':
        row += n || 1;
        return;
      case 'C':
        col = Math.min(columns - 1, col + (n || 1));
        return;
      case 'D':
        col = Math.max(0, col - (n || 1));
        return;
      case 'G':
        col = Math.min(columns, Math.max(1, n ?? 1)) - 1;
        return;
      case 'K': {
        const cells = line(row);
        if (n === undefined || n === 0) cells.length = Math.min(cells.length, col);
        else if (n === 1) cells.fill(' ', 0, Math.min(cells.length, col + 1));
        else if (n === 2) cells.length = 0;
        else break;
        return;
      }
      case 'J':
        if (n !== undefined && n !== 0) break;
        line(row).length = Math.min(line(row).length, col);
        screen.length = Math.min(screen.length, row + 1);
        return;
    }
    throw new Error(`terminal: unknown sequence CSI ${params}${final}`);
  };
  return {
    write(chunk) {
      const text = typeof chunk === 'string' ? chunk : decoder.write(Buffer.from(chunk));
      for (const [token, params, final] of text.matchAll(TOKEN)) {
        if (final !== undefined) csi(params!, final);
        else if (token === '\r') {
          col = 0;
          wrapPending = false;
        } else if (token === '\n') {
          row++;
          col = 0;
          wrapPending = false;
        } else if (/^\p{Cc}$/u.test(token)) {
          throw new Error(`terminal: unknown control character ${JSON.stringify(token)}`);
        } else put(token);
      }
    },
    rows() {
      const rows = screen.map((cells) => cells.join('').trimEnd());
      while (rows.length > row + 1 && rows.at(-1) === '') rows.pop();
      while (rows.length < row + 1) rows.push('');
      return rows;
    },
    get cursor() {
      return { row, col };
    },
  };
}

/**
 * `text` as a terminal `columns` wide shows it, as {@link Terminal.rows} gives it: its rows, each
 * `columns` long but the last, without trailing blanks.
 */
export function wrapped(text: string, columns: number): string[] {
  const rows: string[] = [];
  for (let at = 0; at < text.length || at === 0; at += columns)
    rows.push(text.slice(at, at + columns).trimEnd());
  return rows;
}
