// The host page's Chakra UI v3 and React Router: provided by Airflow at runtime (build.mjs maps
// the imports to globalThis.ChakraUI / ReactRouterDOM), typed loosely here.
declare module "@chakra-ui/react" {
  export const Badge: any, Box: any, Button: any, Field: any, Flex: any, Heading: any,
    HStack: any, Input: any, Link: any, NativeSelect: any, Spinner: any, Text: any, Textarea: any;
}
declare module "react-router-dom" {
  export const Link: any;
  export function useSearchParams(): [URLSearchParams, (p: URLSearchParams) => void];
}
