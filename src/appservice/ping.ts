/**
 * POST /_matrix/client/v1/appservice/{appserviceId}/ping: the homeserver calls the service's
 * `POST /_matrix/app/v1/ping` and reports how long it took (spec v1.7+). Errors as the spec
 * lists them: M_URL_NOT_SET, M_BAD_STATUS (with status and body), M_CONNECTION_FAILED,
 * M_CONNECTION_TIMEOUT.
 */
import { MatrixError, badJson, forbidden } from "../protocol/errors.js";
import type { AppserviceRegistration } from "./registration.js";
import { AppserviceRequestError, type AppserviceClient } from "./as-client.js";

export class AppservicePing {
  constructor(
    private readonly client: AppserviceClient,
    private readonly clock: () => number = Date.now,
  ) {}

  async ping(caller: AppserviceRegistration, appserviceId: string, transactionId: unknown): Promise<{ duration_ms: number }> {
    if (caller.id !== appserviceId) throw forbidden(`The access token does not belong to application service ${appserviceId}`);
    if (transactionId !== undefined && typeof transactionId !== "string") throw badJson("transaction_id must be a string");
    if (!caller.url) throw new MatrixError(400, "M_URL_NOT_SET", `Application service ${appserviceId} has no url`);
    const started = this.clock();
    let answer: { status: number; body: unknown };
    try {
      answer = await this.client.request(caller, "POST", "/_matrix/app/v1/ping", JSON.stringify(transactionId !== undefined ? { transaction_id: transactionId } : {}));
    } catch (e) {
      if (e instanceof AppserviceRequestError && e.timedOut) throw new MatrixError(504, "M_CONNECTION_TIMEOUT", "The application service did not answer in time");
      throw new MatrixError(502, "M_CONNECTION_FAILED", `The application service could not be reached: ${(e as Error).message}`);
    }
    if (answer.status !== 200)
      throw new MatrixError(502, "M_BAD_STATUS", `The application service answered ${answer.status}`, {
        status: answer.status,
        body: typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body),
      });
    return { duration_ms: this.clock() - started };
  }
}
