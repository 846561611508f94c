import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { Factcheck, ValidateV1 } from "../lib/work-schemas.ts";

// Prompts a client can offer its user: they only phrase a request for the tools; nothing runs until a tool is called.

export function registerPrompts(server: McpServer): void {
  server.registerPrompt(
    "factcheck_claim",
    {
      title: "Fact-check a claim",
      description: "Ask the assistant to check a claim with the network (the cortensor_factcheck tool).",
      argsSchema: { claim: Factcheck.shape.claim },
    },
    ({ claim }) => ({
      messages: [
        {
          role: "user",
          content: {
            type: "text",
            text: `Check this claim with the cortensor_factcheck tool and report its verdict and the evidence it cites:\n\n${claim}`,
          },
        },
      ],
    }),
  );
  server.registerPrompt(
    "second_opinion",
    {
      title: "Second opinion on an answer",
      description: "Have the network's miners validate an answer to a question (the cortensor_validate tool).",
      argsSchema: { question: ValidateV1.shape.task_request_input, answer: ValidateV1.shape.task_result_output },
    },
    ({ question, answer }) => ({
      messages: [
        {
          role: "user",
          content: {
            type: "text",
            text: `Use the cortensor_validate tool with task_request_input set to the question and task_result_output set to the answer below, then summarise whether the miners accept it.\n\nQuestion: ${question}\n\nAnswer: ${answer}`,
          },
        },
      ],
    }),
  );
}
