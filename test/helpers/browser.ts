/**
 * Headless Chromium (Debian's `chromium`, scripts/deps.sh installs it) driven
 * by playwright-core, for the web page's tests and bench/ui.ts.
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

/**
 * The browser globals the page functions below use: this project's TypeScript
 * settings have no DOM types (the functions run in the page, not in Node).
 */
interface El {
  tagName: string;
  textContent: string | null;
  getAttribute(name: string): string | null;
  closest(sel: string): El | null;
  blur(): void;
}
export interface PageGlobals {
  location: { hash: string };
  document: { activeElement: El | null };
  requestAnimationFrame(cb: () => void): void;
  getComputedStyle(el: El): { outlineStyle: string };
}

export const CHROMIUM = process.env.SNAPYARD_CHROMIUM ?? '/usr/bin/chromium';

/** Where screenshots go (gitignored). */
export const ARTIFACTS = resolve(import.meta.dirname, '..', '..', 'test-artifacts');

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}

/** Logs in through the page's form (the token flow) and waits for the repositories page. */
export async function logIn(page: Page, base: string, user: string, password: string): Promise<void> {
  await page.goto(`${base}/ui/#/login`);
  await page.getByLabel('User').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('button', { name: `Log out ${user}` }).waitFor();
}

/** Goes to a page of the app by its hash (no reload: the login stays in memory). */
export async function go(page: Page, hash: string): Promise<void> {
  await page.evaluate((h) => {
    (globalThis as unknown as PageGlobals).location.hash = h;
  }, hash);
}

/** Presses Tab up to `max` times from the top of the page; answers a description of each element focused. */
export async function tabOrder(page: Page, max: number): Promise<string[]> {
  await page.evaluate(() => (globalThis as unknown as PageGlobals).document.activeElement?.blur());
  const seen: string[] = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    seen.push(await page.evaluate(() => {
      const el = (globalThis as unknown as PageGlobals).document.activeElement;
      if (!el) return '';
      const row = el.closest('[data-tag]')?.getAttribute('data-tag') ?? '';
      return `${el.tagName.toLowerCase()}|${el.getAttribute('data-action') ?? ''}|${row}|${(el.textContent ?? '').trim().slice(0, 40)}`;
    }));
  }
  return seen;
}

export async function screenshot(page: Page, name: string, width: number, height: number): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.setViewportSize({ width, height });
  // Charts resize on the next frames.
  await page.evaluate(() => new Promise<void>((r) => (globalThis as unknown as PageGlobals).requestAnimationFrame(() => (globalThis as unknown as PageGlobals).requestAnimationFrame(r))));
  const path = resolve(ARTIFACTS, `${name}-${width}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
