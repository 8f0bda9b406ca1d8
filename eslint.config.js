// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import rxjsX from 'eslint-plugin-rxjs-x';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.bench-out/**'] },
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'rxjs-x': rxjsX },
    rules: {
      'rxjs-x/no-exposed-subjects': 'error',
      'rxjs-x/no-ignored-subscription': 'error',
      'rxjs-x/no-unsafe-takeuntil': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['lib/**/*.ts'],
    rules: {
      // Node defines the global Buffer as a getter: each use in the bundle was a function call,
      // ~5 per message sent, in code V8 runs unoptimised. The module's binding is a plain load.
      'no-restricted-globals': [
        'error',
        { name: 'Buffer', message: "import { Buffer } from 'node:buffer' (the global is a getter)" },
        {
          name: 'performance',
          message:
            'the CLI bundle defines it as undefined (package.json: perf_hooks costs an idle node ~0.2 MB)',
        },
      ],
      // Each costs an idle node memory (README, Performance: idle memory; spec/cli/footprint.spec.ts).
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: [
            {
              name: 'node:crypto',
              message: 'lib/security/bytes.ts and sodium.ts (libsodium); node:crypto costs ~1 MB',
              allowTypeImports: true,
            },
            {
              name: 'node:tty',
              message: "a stream's isTTY (node:tty costs ~0.15 MB)",
              allowTypeImports: true,
            },
            { name: 'node:process', message: 'the global process (the import loads ~0.5 MB)' },
          ],
        },
      ],
    },
  },
  {
    files: ['spec/**/*.ts', 'bench/**/*.ts'],
    rules: {
      // node:test's describe/it return promises the runner awaits itself.
      '@typescript-eslint/no-floating-promises': 'off',
      'rxjs-x/no-ignored-subscription': 'off',
    },
  },
);
