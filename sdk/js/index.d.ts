// Types of the Switchyard router world (../wit/switchyard.wit) and of this SDK.

/** What `init` tells the host: the headers (and `?query`, `:client-address`) and cookies `route` reads. */
export interface Needs {
  headers: string[];
  cookies: string[];
}

/** The request a router sees. */
export declare class Request {
  readonly method: string;
  readonly path: string;
  readonly stickyKey: string | undefined;
  header(name: string): string | undefined;
  query(name: string): string | undefined;
  clientAddress(): string | undefined;
  cookie(name: string): string | undefined;
  static decode(bytes: Uint8Array): Request;
}

export declare const NO_OPINION: -1;
export declare const ERROR: -2;
export declare const CLIENT_ADDRESS: ":client-address";

export declare function needs(wants?: { headers?: string[]; cookies?: string[]; query?: string[]; clientAddress?: boolean }): Needs;
export declare function log(level: "debug" | "info" | "warn" | "error", message: unknown): void;

/** The WIT world's exports. */
export interface RouterExports {
  init(config: string, pools: string[]): Needs;
  route(request: Uint8Array): number;
}

export declare function router<S>(plugin: {
  init(config: unknown, pools: string[]): S;
  route(state: S, request: Request): string | null | undefined;
  needs?(state: S): Needs;
}): RouterExports;
